"""nodes/identity.py: the model fingerprint and the checkpoint's AutoV2 alias."""
import os
import shutil
import sys

import pytest
import torch

from comfy_host import fitted_entry, make_model


def test_identity_is_stable_and_tracks_the_weights(clean):
    ident = clean.identity
    model = make_model(clean)
    a = ident.fingerprint(model)
    assert a == ident.fingerprint(model.clone()) and a.key.startswith("fp1-") and a.base.startswith("weights:")
    assert a.key == ident.fingerprint(make_model(clean)).key  # same weights, new objects (a new process)
    assert a.key != ident.fingerprint(make_model(clean, seed=3)).key
    assert a.key != ident.fingerprint(make_model(clean, flow=True)).key


def test_identity_tracks_a_model_sampling_patch_that_changes_the_values(clean):
    ident = clean.identity
    shifted = make_model(clean, flow=True)
    base_flow = ident.fingerprint(shifted).key
    patched = shifted.clone()
    patched.add_object_patch("model_sampling", type(shifted.model.model_sampling)(shift=6.0))  # ModelSamplingSD3
    assert ident.fingerprint(patched).key != base_flow
    same = shifted.clone()
    same.add_object_patch("model_sampling", type(shifted.model.model_sampling)(shift=3.0))
    assert ident.fingerprint(same).key == base_flow


def test_a_lora_merged_in_place_keeps_the_base_weights_digest(clean):
    ident = clean.identity
    model = make_model(clean)
    merged = make_model(clean)  # ComfyUI keeps the original in ModelPatcher.backup
    weight = merged.model.diffusion_model.proj.weight
    merged.backup["diffusion_model.proj.weight"] = type("Backup", (), {"weight": weight.detach().clone()})()
    with torch.no_grad():
        weight.add_(0.5)
    assert ident.weights_digest(merged) == ident.weights_digest(model)


def test_identity_is_memoised(clean, monkeypatch):
    model = make_model(clean)
    a = clean.identity.fingerprint(model)
    monkeypatch.setattr(model.model, "state_dict", lambda *a, **k: pytest.fail("weights read twice"))
    assert clean.identity.fingerprint(model) == a


def on_checkpoint(clean, path):
    """A MODEL loaded from the checkpoint file ``path`` (written here; newer ComfyUI records the file)."""
    from safetensors.torch import save_file
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(path))
    model = make_model(clean)
    model.cached_patcher_init = (object, (str(path), {}))
    return model


def test_a_checkpoint_file_is_hashed_by_content_with_its_autov2_alias(clean, tmp_path, monkeypatch):
    import hashlib
    ident = clean.identity
    a = ident.fingerprint(make_model(clean))
    ckpt = tmp_path / "my_model.safetensors"
    on_file = on_checkpoint(clean, ckpt)
    f = ident.fingerprint(on_file)
    assert f.base.startswith("file:") and f.name == "my_model"
    # the bare checkpoint also carries its AutoV2 (the WebUI's identity), hashed once per file version
    assert a.aliases == () and f.aliases == (hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10],)
    assert f.ids == (f.key, *f.aliases)
    monkeypatch.setattr(sys.modules["dode.lambdas.identity"], "hashlib", None)
    assert ident.fingerprint(on_file) == f


def test_a_renamed_copy_is_the_same_model_until_it_is_rewritten(clean, tmp_path):
    ident = clean.identity
    ckpt = tmp_path / "my_model.safetensors"
    f = ident.fingerprint(on_checkpoint(clean, ckpt))
    copy = tmp_path / "renamed.safetensors"
    shutil.copy(ckpt, copy)
    on_copy = make_model(clean)
    on_copy.cached_patcher_init = (object, (str(copy), {}))
    assert ident.fingerprint(on_copy).key == f.key
    from safetensors.torch import save_file
    save_file({"w": torch.arange(1000, dtype=torch.float32) + 1}, str(copy))
    stat = os.stat(copy)  # a real rewrite lands on a later mtime tick; a coarse clock may not show it here
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert ident.fingerprint(on_copy).key != f.key


def test_first_call_on_a_7gb_checkpoint_does_not_wait_for_its_hash(clean, tmp_path, monkeypatch):
    """The AutoV2 of a bare checkpoint is hashed in the background: the fingerprint of a 7 GB file comes back at once
    without it, an entry saved meanwhile gets the alias when the hash is done, and later fingerprints carry it. (The
    hash is held back by an event here; hashing 7 GB takes 5-40 s on this machine.)"""
    import threading
    import time
    from dode import load_lambdas
    big = tmp_path / "big_model.safetensors"
    with open(big, "wb") as f:
        f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
        f.truncate(7 * 10**9)  # sparse: a 7 GB file that uses no disk
    release, hashed = threading.Event(), []

    def slow_autov2(path, cache=None):
        release.wait(60)
        hashed.append(path)
        return "0123abcdef"

    monkeypatch.setattr(clean.identity, "autov2", slow_autov2)
    model = make_model(clean)
    model.cached_patcher_init = (object, (str(big), {}))
    start = time.perf_counter()
    first = clean.identity.fingerprint(model)
    assert time.perf_counter() - start < 1.0  # the fingerprint reads the header and 5 MiB; the hash waits
    assert first.base.startswith("file:") and first.aliases == () and not first.alias_pending.done()
    path = clean.store.add(first, "euler", fitted_entry(clean, model))
    assert load_lambdas(path)[0].aliases == [] and not hashed
    release.set()
    assert first.alias_pending.result(timeout=60) == "0123abcdef"
    deadline = time.time() + 30
    while load_lambdas(path)[0].aliases != ["0123abcdef"] and time.time() < deadline:
        time.sleep(0.05)
    assert load_lambdas(path)[0].aliases == ["0123abcdef"]  # added to the entry written before the hash was known
    later = clean.identity.fingerprint(model)
    assert later.aliases == ("0123abcdef",) and later.alias_pending is None and later.key == first.key
    assert hashed == [str(big)]  # once per file version
