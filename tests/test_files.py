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
    fit = dode.distill(gmm, torch.randn(4, 64) * 80, karras_sigmas(5), "heun", scale=2, objective="greedy", disable=True)
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
    """A safetensors file with ``header`` as its metadata (JSON for non-strings; None leaves a field out)."""
    metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in header.items() if v is not None}
    save_file(tensors, str(path), metadata=metadata)
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
                         entries=[{"sampler": "euler", "steps": 6}]), "entry 0: steps says 6"),
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

    monkeypatch.setattr("dode.lambdas.files.write_bytes", crash)
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


# ---------------------------------------------------------------- the strict schema (issue 10)

def write_entry(path, tensors=None, version="1", **meta):
    """A one-entry λ file written by hand: GOOD's tensors (or ``tensors``) and META's fields updated by ``meta``."""
    return write_raw(path, GOOD if tensors is None else tensors, format="dode.lambdas", format_version=version,
                     entries=[{**META[0], **meta}])


@pytest.mark.parametrize("field, value, message", [
    ("model", ["a", "b"], "model must be a string"),
    ("cfg", "7", "cfg must be a finite number or null"),
    ("cfg", True, "cfg must be a finite number or null"),
    ("cfg", 10 ** 400, "cfg must be a finite number or null"),
    ("teacher", 3, "teacher must be a string or null"),
    ("scale", 2.5, r"scale must be an integer ≥ 1"),
    ("scale", 0, r"scale must be an integer ≥ 1"),
    ("scale", False, r"scale must be an integer ≥ 1"),
    ("first_step", [], "first_step must be a string"),
    ("metrics", [1, 2], "metrics must be an object of strings, numbers"),
    ("metrics", {"a": [1]}, "metrics must be an object of strings, numbers"),
    ("created", 5, "created must be a string"),
    ("dode_version", {}, "dode_version must be a string"),
    ("sampler", ["euler"], "unknown sampler"),
    ("steps", "5", "steps says '5'"),
    ("steps", True, "steps says True"),
])
def test_every_metadata_field_has_its_type(tmp_path, field, value, message):
    path = write_entry(tmp_path / "bad.safetensors", **{field: value})
    with pytest.raises(dode.LambdaFileError, match=rf"bad\.safetensors: entry 0.*{message}"):
        dode.load_lambdas(path)


@pytest.mark.parametrize("tensor", [
    torch.zeros(5, dtype=torch.bool), torch.zeros(5, dtype=torch.int64), torch.zeros(5, dtype=torch.float16),
    torch.zeros(5, dtype=torch.float32), torch.zeros(5, dtype=torch.uint64), torch.zeros(5, dtype=torch.complex64),
    torch.zeros(5, dtype=torch.float8_e4m3fn), torch.zeros(1, 5, dtype=torch.float64),
    torch.zeros(5, 1, 1, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64),
])
def test_tensors_must_be_float64_vectors(tmp_path, tensor):
    try:
        path = write_entry(tmp_path / "bad.safetensors", {"0.lambdas": tensor, "0.sigmas": GOOD["0.sigmas"]})
    except Exception:  # this safetensors can't even write that dtype
        pytest.skip(f"safetensors cannot store {tensor.dtype}")
    with pytest.raises(dode.LambdaFileError, match=r"entry 0: tensor 0\.lambdas must be float64 and 1-D, got"):
        dode.load_lambdas(path)
    sigmas2d = {"0.lambdas": GOOD["0.lambdas"], "0.sigmas": GOOD["0.sigmas"][None]}
    with pytest.raises(dode.LambdaFileError, match=r"tensor 0\.sigmas must be float64 and 1-D"):
        dode.load_lambdas(write_entry(tmp_path / "bad2.safetensors", sigmas2d))


@pytest.mark.parametrize("version, message", [
    ("0", "'0' is not a λ file version"), ("١", "is not a λ file version"), ("²", "is not a λ file version"),
    ("01", "is not a λ file version"), ("1.0", "is not a λ file version"), (" 1", "is not a λ file version"),
    ("2", "newer than this dode supports"), ("12", "newer than this dode supports"),
])
def test_format_version_is_exactly_one(tmp_path, version, message):
    with pytest.raises(dode.LambdaFileError, match=message):
        dode.load_lambdas(write_entry(tmp_path / "v.safetensors", version=version))
    assert dode.load_lambdas(write_entry(tmp_path / "ok.safetensors", version="1"))[0].sampler == "euler"


def test_values_outside_the_schema_are_refused(tmp_path):
    def rejected(tensors, message, **header):
        path = write_raw(tmp_path / "bad.safetensors", tensors, **({"format": "dode.lambdas", "format_version": "1",
                                                                     "entries": META} | header))
        with pytest.raises(dode.LambdaFileError, match=message):
            dode.load_lambdas(path)

    sigmas = GOOD["0.sigmas"]
    rejected({"0.lambdas": torch.full((5,), 1e300, dtype=torch.float64), "0.sigmas": sigmas}, "beyond the bound 10000")
    rejected({"0.lambdas": torch.full((5,), -10001.0, dtype=torch.float64), "0.sigmas": sigmas}, "beyond the bound")
    rejected({"0.lambdas": torch.full((5,), float("nan"), dtype=torch.float64), "0.sigmas": sigmas}, "NaN")
    infinite = sigmas.clone().index_fill_(0, torch.tensor([2]), float("inf"))
    rejected({"0.lambdas": GOOD["0.lambdas"], "0.sigmas": infinite}, "NaN or infinity")
    rejected(GOOD | {"1.lambdas": GOOD["0.lambdas"].clone()}, r"tensor '1\.lambdas' belongs to none of the 1 entries")
    rejected(GOOD, "the header has no format_version", format_version=None)
    rejected(GOOD, "the header has no entry list", entries=None)
    rejected(GOOD, "not JSON dode can read", entries="[" * 100000 + "]" * 100000)
    rejected(GOOD, "not JSON dode can read", entries='[{"sampler": "euler", "scale": 1' + "0" * 5000 + "}]")
    rejected(GOOD, "entry 0: the metadata must be an object", entries=["euler"])
    edge = {"0.lambdas": torch.full((5,), 1e4, dtype=torch.float64), "0.sigmas": sigmas}
    assert dode.load_lambdas(write_entry(tmp_path / "edge.safetensors", edge))[0].lambdas.max() == 1e4


def test_things_that_are_not_files_give_one_clear_error(tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    os.symlink(tmp_path / "missing", tmp_path / "dangling.safetensors")
    os.symlink(tmp_path / "loop.safetensors", tmp_path / "loop.safetensors")
    os.mkfifo(tmp_path / "fifo.safetensors")
    with open(tmp_path / "big.safetensors", "wb") as f:
        f.truncate(dode.lambdas.files.MAX_FILE_BYTES + 1)
    for name, message in [("dir", "not a regular file"), ("fifo", "not a regular file"),
                          ("dangling", "a symbolic link to a missing file"), ("loop", "cannot open the λ file"),
                          ("big", "larger than 16 MiB")]:
        with pytest.raises(dode.LambdaFileError, match=rf"{name}\.safetensors: .*{message}"):
            dode.load_lambdas(tmp_path / f"{name}.safetensors")


def test_the_store_skips_every_bad_file_names_it_and_serves_the_others(tmp_path, caplog):
    folder = tmp_path / "models [sdxl]"  # glob characters in the folder name
    folder.mkdir()
    (folder / "dir.safetensors").mkdir()
    os.symlink(tmp_path / "missing", folder / "dangling.safetensors")
    os.symlink(folder / "loop.safetensors", folder / "loop.safetensors")
    os.mkfifo(folder / "fifo.safetensors")
    write_entry(folder / "version.safetensors", version="²")
    write_entry(folder / "deep.safetensors").write_bytes(b"")
    write_raw(folder / "nested.safetensors", GOOD, format="dode.lambdas", format_version="1",
              entries="[" * 100000 + "]" * 100000)
    write_entry(folder / "model.safetensors", model=["a"])
    dode.save_lambdas(folder / "zz-good.safetensors", entry())
    store = dode.LambdaStore([folder])
    with caplog.at_level("WARNING", logger="dode"):
        found, where = store.lookup("model-a", "euler", karras_sigmas(5), cfg=7.0)
        assert store.lookup("model-a", "euler", karras_sigmas(5), cfg=7.0)[0] is not None
    assert found is not None and where == str(folder / "zz-good.safetensors")
    bad = {"dir", "dangling", "loop", "fifo", "version", "deep", "nested", "model"}
    assert [os.path.basename(p) for p, _ in store.skipped] == sorted(f"{n}.safetensors" for n in bad)
    assert all(reason.startswith(path) for path, reason in store.skipped)
    assert caplog.text.count("skipping") == len(bad)  # one named warning per file, not one per lookup
    for name in bad:
        assert f"{name}.safetensors" in caplog.text
    os.unlink(folder / "dangling.safetensors")
    store.lookup("model-a", "euler", karras_sigmas(5), cfg=7.0)
    assert len(store.skipped) == len(bad) - 1


def test_add_refuses_to_overwrite_a_file_it_cannot_read(tmp_path):
    path = write_entry(tmp_path / "m.safetensors", version="2")
    before = path.read_bytes()
    with pytest.raises(dode.LambdaFileError, match="newer than this dode supports.*Not adding to it"):
        dode.LambdaStore().add(path, entry())
    assert path.read_bytes() == before


def test_write_errors_name_the_real_problem(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder"):
        dode.save_lambdas(tmp_path / "file" / "sub" / "m.safetensors", entry())
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder"):
        dode.LambdaStore().add(tmp_path / "file" / "m.safetensors", entry())
    real_open = os.open

    def read_only(path, flags, *args):
        if ".dode-" in os.fspath(path) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(PermissionError, match=r"the folder .*ro is read-only; choose a writable folder") as e:
        dode.save_lambdas(tmp_path / "ro" / "m.safetensors", entry())
    assert ".dode-" not in str(e.value)
    monkeypatch.undo()
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)  # what a read-only mount reports
    for save in (dode.save_lambdas, dode.LambdaStore().add):
        with pytest.raises(PermissionError, match=r"the folder .*ro2 is read-only"):
            save(tmp_path / "ro2" / "m.safetensors", entry())
    assert os.listdir(tmp_path / "ro2") == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="read-only"):
            dode.save_lambdas(folder / "m.safetensors", entry())
    finally:
        folder.chmod(0o755)


def test_saving_never_touches_the_process_umask(tmp_path, monkeypatch):
    umask = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("save_lambdas changed the process umask"))
        path = dode.save_lambdas(tmp_path / "m.safetensors", entry())
        dode.LambdaStore().add(path, entry("heun"))
    finally:
        monkeypatch.undo()
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o640


def dead_pid():
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_files_of_ours_are_cleaned_on_the_next_scan_and_write(tmp_path):
    import time
    host = dode.lambdas.files.this_host()
    folder = tmp_path / "lambdas"
    folder.mkdir()
    dead, alive, old, fresh, other = (folder / f".dode-{dead_pid()}@{host}.a1.tmp",
                                      folder / f".dode-{os.getpid()}@{host}.b2.tmp",
                                      folder / ".dode-oldstyle.tmp", folder / ".dode-fresh.tmp", folder / ".other.tmp")
    for p in (dead, alive, old, fresh, other):
        p.write_bytes(b"partial")
    hour_ago = time.time() - dode.lambdas.files.STALE_TEMP_SECONDS - 60
    os.utime(old, (hour_ago, hour_ago))
    dode.LambdaStore([folder]).lookup("m", "euler", karras_sigmas(5))
    assert sorted(p.name for p in folder.iterdir()) == sorted([alive.name, fresh.name, other.name])
    dead.write_bytes(b"partial")
    dode.save_lambdas(folder / "m.safetensors", entry())
    assert sorted(p.name for p in folder.iterdir()) == sorted([alive.name, fresh.name, other.name, "m.safetensors"])


def test_entries_refuse_bad_values_when_made_in_code():
    sigmas = karras_sigmas(5)
    for kw, message in [(dict(cfg="7"), "cfg must be a finite number"), (dict(cfg=True), "cfg must be"),
                        (dict(model=None), "model must be a string"),
                        (dict(lambdas=["0.1"] * 5), "lambdas must be a 1-D"),
                        (dict(lambdas=torch.zeros(1, 5)), "lambdas must be a 1-D tensor of real numbers"),
                        (dict(lambdas=torch.full((5,), 2e4)), "beyond the bound")]:
        with pytest.raises(ValueError, match=message):
            LambdaEntry(**(dict(sampler="euler", sigmas=sigmas, lambdas=torch.zeros(5)) | kw))
    assert LambdaEntry("euler", sigmas, [0.1] * 5, cfg=7).cfg == 7.0


def test_sample_with_lambda_warns_once_on_nan_and_checks_the_output_shape():
    import warnings
    sigmas = karras_sigmas(5)
    x = torch.randn(2, 8) * 80

    def nan_model(x, sigma):
        return torch.full_like(x, float("nan"))

    with pytest.warns(RuntimeWarning, match=r"the model returned NaN/inf at σ=80") as record:
        out = dode.sample(nan_model, x, sigmas, "heun", lambdas=torch.zeros(9))
    assert len([w for w in record if "NaN/inf" in str(w.message)]) == 1 and out.isnan().all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dode.sample(nan_model, x, sigmas, "heun")  # the stock path stays as silent as the host's samplers
        dode.sample(lambda x, s: x * 0, x, sigmas, "heun", lambdas=torch.zeros(9))
    with pytest.raises(ValueError, match=r"the model returned shape \(8,\) for a state of shape \(2, 8\)"):
        dode.sample(lambda x, s: x[0], x, sigmas, "euler", lambdas=torch.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(1, 8\)"):
        dode.sample(lambda x, s: x[:1], x, sigmas, "euler")
    with pytest.raises(ValueError, match="lambdas must be a tensor or a list of numbers"):
        dode.sample(lambda x, s: x, x, sigmas, "euler", lambdas=["0.1"] * 5)
