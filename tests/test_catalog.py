"""lambdas/catalog.py: an entry's title and id, the rows a host lists, removing one entry by its id."""
import pytest

import dode
from dode.lambdas.catalog import entry_id, entry_rows, entry_title, remove_entry
from lambda_factory import entry, fitted


def test_an_entrys_title_says_how_it_was_set_up_without_fingerprints():
    assert entry_title(entry(metrics={"scheduler": "karras"})) == "euler, 5 steps (karras), cfg 7"
    assert entry_title(fitted(cfg=None), "custom σ") == "euler, 5 steps (custom σ), fitted schedule"


def test_an_entrys_id_is_stable_and_tells_entries_apart(tmp_path):
    a = entry()
    dode.save_lambdas(tmp_path / "a.safetensors", [a])
    assert entry_id(a) == entry_id(dode.load_lambdas(tmp_path / "a.safetensors")[0])  # the same entry, read back
    assert len({entry_id(a), entry_id(entry(cfg=4.0)), entry_id(entry("heun")), entry_id(fitted())}) == 4


def test_rows_list_every_entry_mark_the_models_and_name_unreadable_files(tmp_path):
    good, broken = tmp_path / "good.safetensors", tmp_path / "broken.safetensors"
    dode.save_lambdas(good, [entry(metrics={"model_name": "toy"}), entry(model="model-b", cfg=4.0)])
    broken.write_bytes(b"garbage")
    store = dode.LambdaStore([tmp_path])
    rows = entry_rows(store, [("good.safetensors", str(good)), ("broken.safetensors", str(broken))], ["model-a"])
    assert [(r["file"], r.get("this_model"), r.get("model")) for r in rows] == [
        ("good.safetensors", True, "toy"), ("good.safetensors", False, "model-b"), ("broken.safetensors", None,
                                                                                           None)]
    assert "error" in rows[2] and str(tmp_path) not in rows[2]["error"]
    assert entry_rows(store, [("good.safetensors", str(good))])[0]["this_model"] is None


def test_removing_an_entry_rewrites_the_file_and_deletes_it_when_empty(tmp_path):
    path = tmp_path / "fits.safetensors"
    a, b = entry(), entry(cfg=4.0)
    dode.save_lambdas(path, [a, b])
    store = dode.LambdaStore([tmp_path])
    assert remove_entry(store, "fits.safetensors", str(path), entry_id(a)) == {
        "file": "fits.safetensors", "id": entry_id(a), "title": "euler, 5 steps, cfg 7", "left": 1}
    assert [e.cfg for e in dode.load_lambdas(path)] == [4.0]
    with pytest.raises(LookupError, match="has no entry 'nope'"):
        remove_entry(store, "fits.safetensors", str(path), "nope")
    assert remove_entry(store, "fits.safetensors", str(path), entry_id(b))["left"] == 0 and not path.exists()
