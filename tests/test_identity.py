"""The AutoV2 checkpoint identity (lambdas/identity.py)."""
import json
import os

import dode


def test_autov2_is_the_webui_short_hash_memoised_in_memory_and_on_disk(tmp_path, monkeypatch, caplog):
    import hashlib
    from dode.lambdas import identity as store_mod
    ckpt = tmp_path / "ckpt.safetensors"
    ckpt.write_bytes(os.urandom(3 << 20))
    cache = tmp_path / "lambdas" / "sha256-cache.json"
    with caplog.at_level("INFO", logger="dode"):
        assert dode.lambdas.autov2(ckpt, cache=cache) == hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10]
    assert "hashing" in caplog.text and sorted(os.listdir(cache.parent)) == ["sha256-cache.json"]
    monkeypatch.setattr(store_mod, "hashlib", None)  # neither the memo nor, after a restart, the disk cache hashes
    assert dode.lambdas.autov2(ckpt, cache=cache) == dode.lambdas.autov2(str(ckpt))
    monkeypatch.setattr(store_mod, "_hash_memo", {})
    first = dode.lambdas.autov2(ckpt, cache=cache)
    monkeypatch.undo()
    ckpt.write_bytes(b"rewritten")
    stat = os.stat(ckpt)
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert dode.lambdas.autov2(ckpt, cache=cache) == hashlib.sha256(b"rewritten").hexdigest()[:10] != first
    assert len(json.loads(cache.read_text())) == 1
