"""The λ store (lambdas/store.py): merges, re-reads, skips bad files, lookups."""
import os

import pytest

import dode
from dode.samplers import karras_sigmas
from lambda_factory import entry, write_raw, GOOD, fitted, write_entry


def test_store_merges_replaces_and_survives_bad_files(tmp_path):
    folder = tmp_path / "dode_lambdas"
    store = dode.LambdaStore([folder])
    found, reason = store.lookup("model-a", "euler", karras_sigmas(5), cfg=7.0)
    assert found is None and "it is empty" in reason
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
    assert found is None and "cfg 7, not 5" in reason


def test_a_miss_with_only_unreadable_files_is_not_called_empty(tmp_path):
    (tmp_path / "broken.safetensors").write_text("not a file")
    found, reason = dode.LambdaStore([tmp_path]).lookup("model-a", "euler", karras_sigmas(5), cfg=7.0)
    assert found is None and "it is empty" not in reason
    assert ": no readable λ entry (skipped unreadable λ files: broken.safetensors (" in reason


def test_store_rereads_a_changed_file(tmp_path):
    path = tmp_path / "x.safetensors"
    store = dode.LambdaStore(files=[path])
    dode.save_lambdas(path, entry(cfg=1.0))
    assert store.lookup("model-a", "euler", karras_sigmas(5), cfg=2.0)[0] is None
    dode.save_lambdas(path, entry(cfg=2.0))
    assert store.lookup("model-a", "euler", karras_sigmas(5), cfg=2.0)[0] is not None


def test_store_replaces_entries_that_share_an_identity(tmp_path):
    path = tmp_path / "x.safetensors"
    store = dode.LambdaStore(files=[path])
    store.add(path, entry(model="fp1-abc", aliases=["0123456789"]))
    store.add(path, entry(model="fp1-lora"))                       # another model: kept side by side
    store.add(path, entry(model="0123456789", metrics={"v": 2}))   # the same checkpoint by its AutoV2: replaces
    assert [(e.model, e.metrics) for e in dode.load_lambdas(path)] == [("fp1-lora", {}), ("0123456789", {"v": 2})]
    found, where = store.lookup(["fp1-abc", "0123456789"], "euler", karras_sigmas(5), cfg=7.0)
    assert found.model == "0123456789" and where == str(path)


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
    assert found is None and "nearest entry" in reason and "steps, not 6" in reason


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
