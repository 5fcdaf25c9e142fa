"""webui/lambda_files.py: the λ files' entries for the loaded checkpoint, removing one, the API routes."""
from webui_host import karras, save_entry


def folder(webui):
    return webui.tmp / "models" / "D-ODE"


def two_files(webui):
    """models/D-ODE/fits.safetensors (this checkpoint's entry, another model's) and the checkpoint's sidecar."""
    mine = save_entry(webui, folder(webui) / "fits.safetensors", "euler", karras(5), model=webui.ident)
    webui.lambdas.save_lambdas(folder(webui) / "fits.safetensors", [mine, webui.lambdas.LambdaEntry(
        sampler="heun", sigmas=karras(4), lambdas=[0.1] * 7, model="0123456789", cfg=4.0)])
    save_entry(webui, webui.ckpt.with_name("toy.dode.safetensors"), "euler", karras(8), model=webui.ident)


def test_rows_list_models_dir_and_the_sidecar_marked_for_the_loaded_checkpoint(webui):
    folder(webui).mkdir(parents=True)
    two_files(webui)
    (folder(webui) / "broken.safetensors").write_bytes(b"garbage")
    rows = webui.ext.lambda_files.rows()
    got = [(r["file"], r.get("title"), r.get("this_model")) for r in rows]
    assert got == [("broken.safetensors", None, None), ("fits.safetensors", "euler, 5 steps, cfg 7", True),
                   ("fits.safetensors", "heun, 4 steps, cfg 4", False), ("toy.dode.safetensors", "euler, 8 steps, cfg 7",
                                                                         True)]
    html = webui.ext.lambda_files.table(rows)
    assert html.index("toy.dode.safetensors") < html.index("heun, 4 steps")  # this checkpoint's first
    assert "cannot be read" in html and str(webui.tmp) not in html
    assert len(webui.ext.lambda_files.removable(rows)) == 3


def test_removing_an_entry_by_its_dropdown_label(webui):
    folder(webui).mkdir(parents=True)
    two_files(webui)
    lf = webui.ext.lambda_files
    (label,) = [c for c in lf.removable(lf.rows()) if "heun" in c]
    assert lf.remove_choice(label) == "Removed heun, 4 steps, cfg 4 from fits.safetensors (1 left)."
    assert [e.sampler for e in webui.lambdas.load_lambdas(folder(webui) / "fits.safetensors")] == ["euler"]
    assert lf.remove_choice(label).startswith("Not removed: fits.safetensors has no entry ")
    assert lf.remove_choice("elsewhere.safetensors · x · 123").startswith("Not removed: no λ file 'elsewhere")
    assert lf.remove_choice(None) == "Choose an entry to remove."
    (side,) = [c for c in lf.removable(lf.rows()) if c.startswith("toy.dode")]
    assert lf.remove_choice(side).endswith("(0 left).") and not webui.ckpt.with_name("toy.dode.safetensors").exists()


def test_the_list_never_loads_a_model(webui):
    """With no model loaded (A1111's shared.sd_model would load one), nothing is marked and no sidecar is known."""
    from modules import sd_models
    folder(webui).mkdir(parents=True)
    two_files(webui)
    sd_models.model_data.sd_model = None
    rows = webui.ext.lambda_files.rows()
    assert [r["file"] for r in rows] == ["fits.safetensors"] * 2 and {r["this_model"] for r in rows} == {None}
    assert rows[1]["model"] == "0123456789"  # no model name recorded: its identity


def test_no_lambda_files_yet_says_how_to_get_one(webui):
    assert webui.ext.lambda_files.rows() == []
    assert "Auto-distill λ" in webui.ext.lambda_files.table([])


def test_a_remove_request_answers_what_it_removed_or_why_not(webui):
    folder(webui).mkdir(parents=True)
    two_files(webui)
    lf = webui.ext.lambda_files
    heun = next(r for r in lf.rows() if "heun" in r["title"])
    assert lf.remove_request({"file": heun["file"], "id": heun["id"]}) == (200, {
        "file": "fits.safetensors", "id": heun["id"], "title": "heun, 4 steps, cfg 4", "left": 1})
    status, payload = lf.remove_request({"file": heun["file"], "id": heun["id"]})
    assert status == 400 and "has no entry" in payload["error"]
    assert lf.remove_request(["not", "a", "dict"])[0] == 400
    assert any(c.__name__ == "add_routes" for c in webui.callbacks.callbacks_app_started)
