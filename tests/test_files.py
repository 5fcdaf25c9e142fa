"""λ files (lambdas/files.py, lambdas/schema.py): the round trip and validation on load."""
import os
import pickle

import pytest
import torch

import dode
from dode.lambdas import LambdaEntry
from dode.samplers import karras_sigmas
from lambda_factory import entry, write_raw, GOOD, META, fitted, write_entry


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


def test_invalid_entries_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="needs 5 λ values"):
        dode.save_lambdas(tmp_path / "m.safetensors", LambdaEntry("euler", karras_sigmas(5), torch.zeros(3)))
    with pytest.raises(ValueError, match="nothing to save"):
        dode.save_lambdas(tmp_path / "m.safetensors", [])
    assert os.listdir(tmp_path) == []


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
        f.truncate(dode.lambdas.schema.MAX_FILE_BYTES + 1)
    for name, message in [("dir", "not a regular file"), ("fifo", "not a regular file"),
                          ("dangling", "a symbolic link to a missing file"), ("loop", "cannot open the λ file"),
                          ("big", "larger than 16 MiB")]:
        with pytest.raises(dode.LambdaFileError, match=rf"{name}\.safetensors: .*{message}"):
            dode.load_lambdas(tmp_path / f"{name}.safetensors")


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
