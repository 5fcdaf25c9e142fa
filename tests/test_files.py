"""λ files: safetensors schema, atomic writes, validation on load, strict lookup, the store."""
import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import dode
from dode.lambdas import LambdaEntry
from dode.samplers import karras_sigmas


def entry(sampler="euler", steps=5, model="model-a", cfg=7.0, **kw):
    sigmas = karras_sigmas(steps)
    return LambdaEntry(sampler=sampler, sigmas=sigmas, lambdas=torch.linspace(0, 1, dode.nfe(sampler, sigmas)),
                       model=model, cfg=cfg, teacher="heun", scale=10, **kw)


def test_roundtrip_keeps_every_field(tmp_path, gmm):
    fit = dode.distill(gmm, torch.randn(4, 64) * 80, karras_sigmas(5), "heun", scale=2, disable=True)
    path = dode.save_lambdas(tmp_path / "m.safetensors", [fit, entry()], model="model-a", cfg=7.0)
    loaded = dode.load_lambdas(path)
    assert len(loaded) == 2
    assert torch.equal(loaded[0].lambdas, fit.lambdas) and torch.equal(loaded[0].sigmas, fit.sigmas)
    assert loaded[0].meta() == fit.entry(model="model-a", cfg=7.0).meta() | {"created": loaded[0].created}
    assert (loaded[0].sampler, loaded[0].model, loaded[0].cfg, loaded[0].teacher) == ("heun", "model-a", 7.0, fit.teacher)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_lookup_is_strict_and_explains_near_misses():
    entries = [entry(), entry("heun")]
    sigmas = karras_sigmas(5)
    assert dode.find_lambdas(entries, "heun", sigmas, model="model-a", cfg=7.0) is entries[1]
    assert dode.find_lambdas(entries, "euler", sigmas.float(), cfg=7.0) is entries[0]
    cases = [
        (dict(sampler="dpmpp_2m"), "sampler euler"),
        (dict(model="model-b"), "another model"),
        (dict(sigmas=karras_sigmas(6)), "5 steps, not 6"),
        (dict(sigmas=karras_sigmas(5, sigma_max=14.6)), "another σ grid"),
        (dict(cfg=4.0), "cfg 7.0, not 4.0"),
        (dict(cfg=None), "cfg 7.0, not None"),
    ]
    for change, message in cases:
        request = dict(sampler="euler", sigmas=sigmas, model="model-a", cfg=7.0) | change
        with pytest.raises(dode.LambdaNotFound, match=message):
            dode.find_lambdas(entries, **request)


def write_raw(path, tensors, **header):
    save_file(tensors, str(path), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in header.items()})
    return path


GOOD = {"0.lambdas": torch.zeros(5, dtype=torch.float64), "0.sigmas": karras_sigmas(5).double()}
META = [{"sampler": "euler", "steps": 5}]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(pickle.dumps({"lambdas": [0.1]})), "not a readable safetensors file"),
    (lambda p: p.write_text("hello"), "not a readable safetensors file"),
    (lambda p: write_raw(p, GOOD, format="other"), "not a dode λ file"),
    (lambda p: write_raw(p, GOOD, format="dode.lambdas", format_version="99", entries=META), "newer than this dode"),
    (lambda p: write_raw(p, GOOD, format="dode.lambdas", format_version="1", entries="{"), "not JSON"),
    (lambda p: write_raw(p, GOOD, format="dode.lambdas", format_version="1", entries=[]), "holds no λ entries"),
    (lambda p: write_raw(p, GOOD, format="dode.lambdas", format_version="1",
                         entries=[{"sampler": "heun", "steps": 5}]), "needs 9 λ values"),
    (lambda p: write_raw(p, GOOD, format="dode.lambdas", format_version="1",
                         entries=[{"sampler": "dpm_fast"}]), "unknown sampler"),
    (lambda p: write_raw(p, GOOD, format="dode.lambdas", format_version="1",
                         entries=[{"sampler": "euler", "steps": 6}]), "says 6 steps"),
    (lambda p: write_raw(p, {"0.lambdas": GOOD["0.lambdas"], "0.sigmas": GOOD["0.sigmas"].flip(0)},
                         format="dode.lambdas", format_version="1", entries=META), "strictly decreasing"),
    (lambda p: write_raw(p, {"0.lambdas": GOOD["0.lambdas"]}, format="dode.lambdas", format_version="1",
                         entries=META), "missing 0.sigmas"),
    (lambda p: None, "no such λ file"),
])
def test_invalid_files_are_rejected_with_the_reason(tmp_path, make, message):
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(dode.LambdaFileError, match=message):
        dode.load_lambdas(path)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    dode.save_lambdas(path, entry())
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dode.lambdas.files.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        dode.save_lambdas(path, entry(cfg=3.0))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_invalid_entries_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="needs 5 λ values"):
        dode.save_lambdas(tmp_path / "m.safetensors", LambdaEntry("euler", karras_sigmas(5), torch.zeros(3)))
    with pytest.raises(ValueError, match="nothing to save"):
        dode.save_lambdas(tmp_path / "m.safetensors", [])
    assert os.listdir(tmp_path) == []


def test_store_merges_replaces_and_survives_bad_files(tmp_path):
    folder = tmp_path / "dode_lambdas"
    store = dode.LambdaStore([folder])
    found, reason = store.lookup("model-a", "euler", karras_sigmas(5), cfg=7.0)
    assert found is None and "no λ files" in reason
    path = folder / "model-a.safetensors"
    store.add(path, entry())
    store.add(path, entry("heun"))
    store.add(path, entry(metrics={"v": 2}))
    entries = dode.load_lambdas(path)
    assert [e.sampler for e in entries] == ["heun", "euler"] and entries[1].metrics == {"v": 2}
    (folder / "broken.safetensors").write_text("not a file")
    found, where = store.lookup("model-a", "heun", karras_sigmas(5), cfg=7.0)
    assert found.sampler == "heun" and where == str(path)
    assert "broken.safetensors" in next(iter(store.problems))
    found, reason = store.lookup("model-a", "heun", karras_sigmas(5), cfg=5.0)
    assert found is None and "cfg 7.0, not 5.0" in reason


def test_store_rereads_a_changed_file(tmp_path):
    path = tmp_path / "x.safetensors"
    store = dode.LambdaStore(files=[path])
    dode.save_lambdas(path, entry(cfg=1.0))
    assert store.lookup("model-a", "euler", karras_sigmas(5), cfg=2.0)[0] is None
    dode.save_lambdas(path, entry(cfg=2.0))
    assert store.lookup("model-a", "euler", karras_sigmas(5), cfg=2.0)[0] is not None


def test_aliases_roundtrip_match_and_validate(tmp_path):
    path = dode.save_lambdas(tmp_path / "m.safetensors", [entry(model="fp1-abc", aliases=["0123456789"]), entry()])
    aliased, plain = dode.load_lambdas(path)
    assert aliased.aliases == ["0123456789"] and plain.aliases == []
    assert "alias 0123456789" in aliased.describe()
    sigmas = karras_sigmas(5)
    for model in ("fp1-abc", "0123456789", ["other", "0123456789"], ("fp1-abc",)):
        assert dode.find_lambdas([aliased], "euler", sigmas, model=model, cfg=7.0) is aliased
    with pytest.raises(dode.LambdaNotFound, match=r"model 0123456789 or fp1-zzz.*another model \(model-a\)"):
        dode.find_lambdas([plain], "euler", sigmas, model=["fp1-zzz", "0123456789"], cfg=7.0)
    # a file written before aliases existed (no "aliases" key) still loads
    old = write_raw(tmp_path / "old.safetensors", GOOD, format="dode.lambdas", format_version="1",
                    entries=[{"sampler": "euler", "steps": 5, "model": "m"}])
    assert dode.load_lambdas(old)[0].aliases == []
    for bad in ("0123456789", [1], [""]):
        write_raw(tmp_path / "bad.safetensors", GOOD, format="dode.lambdas", format_version="1",
                  entries=[{"sampler": "euler", "steps": 5, "aliases": bad}])
        with pytest.raises(dode.LambdaFileError, match="aliases must be a list of non-empty strings"):
            dode.load_lambdas(tmp_path / "bad.safetensors")


def test_store_replaces_entries_that_share_an_identity(tmp_path):
    path = tmp_path / "x.safetensors"
    store = dode.LambdaStore(files=[path])
    store.add(path, entry(model="fp1-abc", aliases=["0123456789"]))
    store.add(path, entry(model="fp1-lora"))                       # another model: kept side by side
    store.add(path, entry(model="0123456789", metrics={"v": 2}))   # the same checkpoint by its AutoV2: replaces
    assert [(e.model, e.metrics) for e in dode.load_lambdas(path)] == [("fp1-lora", {}), ("0123456789", {"v": 2})]
    found, where = store.lookup(["fp1-abc", "0123456789"], "euler", karras_sigmas(5), cfg=7.0)
    assert found.model == "0123456789" and where == str(path)


def test_autov2_is_the_webui_short_hash_memoised_in_memory_and_on_disk(tmp_path, monkeypatch, caplog):
    import hashlib
    from dode.lambdas import store as store_mod
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


def fitted(steps=5, model="model-a", cfg=7.0, sigma_max=80.0, sampler="euler", **kw):
    """A fitted-schedule entry: a grid the fit chose (here a Karras grid with another ρ), first and last σ kept."""
    sigmas = karras_sigmas(steps, sigma_max=sigma_max, rho=3.0)
    return LambdaEntry(sampler=sampler, sigmas=sigmas, lambdas=torch.full((dode.nfe(sampler, sigmas),), 0.25),
                       model=model, cfg=cfg, schedule="fitted", objective="final", **kw)


def test_schedule_and_objective_roundtrip_and_old_files_load_as_given_greedy(tmp_path):
    path = dode.save_lambdas(tmp_path / "m.safetensors", [fitted(), entry()])
    got_fitted, got_given = dode.load_lambdas(path)
    assert (got_fitted.schedule, got_fitted.objective) == ("fitted", "final")
    assert (got_given.schedule, got_given.objective) == ("given", "greedy")
    assert "fitted schedule" in got_fitted.describe() and "fitted" not in got_given.describe()
    old = write_raw(tmp_path / "old.safetensors", GOOD, format="dode.lambdas", format_version="1", entries=META)
    assert (dode.load_lambdas(old)[0].schedule, dode.load_lambdas(old)[0].objective) == ("given", "greedy")
    for field, value in (("schedule", "karras"), ("objective", "best")):
        write_raw(tmp_path / "bad.safetensors", GOOD, format="dode.lambdas", format_version="1",
                  entries=[{"sampler": "euler", "steps": 5, field: value}])
        with pytest.raises(dode.LambdaFileError, match=f"{field} must be one of"):
            dode.load_lambdas(tmp_path / "bad.safetensors")


def test_a_fitted_entry_is_found_by_its_grid_and_by_find_schedule():
    fit, given = fitted(), entry()
    entries = [given, fit]
    assert dode.find_lambdas(entries, "euler", fit.sigmas.float(), model="model-a", cfg=7.0) is fit
    assert dode.find_lambdas(entries, "euler", karras_sigmas(5), model="model-a", cfg=7.0) is given
    assert dode.find_schedule(entries, "euler", 5, 80.0, model=["x", "model-a"], cfg=7.0) is fit
    assert dode.find_schedule(entries, "euler", 5, 80.0 * (1 + 1e-7), 0.0, model="model-a", cfg=7.0) is fit
    cases = [
        (dict(sampler="heun"), "sampler euler, not heun"),
        (dict(steps=6), "5 steps, not 6"),
        (dict(sigma_max=14.6), "first σ 80, not 14.6"),
        (dict(sigma_last=5e-9), "last σ 0, not 5e-09"),
        (dict(cfg=4.0), "cfg 7.0, not 4.0"),
        (dict(model="model-b"), r"model \(model-a\)"),
    ]
    for change, message in cases:
        request = dict(sampler="euler", steps=5, sigma_max=80.0, model="model-a", cfg=7.0) | change
        with pytest.raises(dode.LambdaNotFound, match=rf"nearest is entry 1 \(euler, 5 steps.*fitted schedule.*"
                                                      rf"which differs in {message}\. "):
            dode.find_schedule(entries, **request)
    with pytest.raises(dode.LambdaNotFound, match="differs in schedule: it holds λ for a given grid"):
        dode.find_schedule([given], "euler", 5, 80.0, cfg=7.0)
    with pytest.raises(dode.LambdaNotFound, match="it is empty"):
        dode.find_schedule([], "euler", 5, 80.0)


def test_a_final_zero_never_matches_a_final_positive_sigma():
    zero = entry()
    tiny = LambdaEntry("heun", torch.cat([karras_sigmas(5)[:-1], torch.tensor([5e-9])]), torch.zeros(10), cfg=7.0)
    with pytest.raises(dode.LambdaNotFound, match="another σ grid"):
        dode.find_lambdas([tiny], "heun", karras_sigmas(5), cfg=7.0)
    with pytest.raises(dode.LambdaNotFound, match="another σ grid"):
        dode.find_lambdas([zero], "euler", tiny.sigmas, cfg=7.0)
    assert not zero.same_grid(tiny.sigmas) and zero.same_grid(karras_sigmas(5).float())


def test_store_finds_schedules_and_replaces_a_fit_for_the_same_range(tmp_path):
    path = tmp_path / "lambdas" / "m.safetensors"
    store = dode.LambdaStore([path.parent])
    store.add(path, [entry(), fitted()])
    store.add(path, fitted(steps=8))                             # another step count: kept
    store.add(path, fitted(metrics={"v": 2}))                    # same model, sampler, steps, range, cfg: replaces
    assert [(e.schedule, e.steps, e.metrics) for e in dode.load_lambdas(path)] == \
        [("given", 5, {}), ("fitted", 8, {}), ("fitted", 5, {"v": 2})]
    found, where = store.lookup_schedule("model-a", "euler", 5, 80.0, cfg=7.0)
    assert found.metrics == {"v": 2} and where == str(path)
    assert store.lookup("model-a", "euler", found.sigmas, cfg=7.0)[0].metrics == {"v": 2}
    found, reason = store.lookup_schedule(["model-a"], "euler", 6, 80.0, cfg=7.0)
    assert found is None and "nearest is entry" in reason and "steps, not 6" in reason
