"""What a ComfyUI user meets around the sampling (issue 19, ComfyUI findings 1–7), on the stub ComfyUI.

Distill λ caches (the report is no input, the seed starts fixed, it is an output node); validate_inputs names only
the inputs it checks, so ComfyUI's own min/max checks run and one cause gives one error; Load λ on an empty folder
says what to do; a miss of a ``*_dode`` sampler is a warning of one short line; toasts and error types carry no
internals; the λ Files node lists entries and removes one atomically; one lock file per λ folder. The same in the
real frontend: tests/test_comfy_e2e_ux.py.
"""
import inspect
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from comfy_host import ADAPTER_MODULES, stubbed_comfy
from dode.lambdas.catalog import entry_id

ROOT = Path(__file__).resolve().parents[1]
LATENT_TIP = ("A batch of latents; 16 or more, as many as you can afford with fit_schedule: a small batch fits the σ "
              "grid to its own seeds (docs/benchmarks.md, \"Where a small batch's overfit lives\").")


@pytest.fixture(scope="module")
def ux(tmp_path_factory):
    """The stub ComfyUI with the pack's adapter (and its routes) imported into it, for this module alone."""
    with stubbed_comfy(tmp_path_factory.mktemp("comfy_ux"), ADAPTER_MODULES + ("dode.nodes.routes",)) as ns:
        yield ns


@pytest.fixture
def fresh(ux):
    shutil.rmtree(ux.lambda_dir, ignore_errors=True)
    ux.ui = ux.server.PromptServer()  # what would reach the browser
    ux.resolve.UNSAVED.clear()
    ux.feedback._told.clear()
    yield ux


def make_model(ux, seed=0):
    mb = ux.model_base
    return ux.model_patcher.ModelPatcher(mb.BaseModel(mb.ModelType.EPS, seed=seed))


def cond(value):
    return [[torch.full((1, 3, 8), float(value)), {}]]


def distill(ux, model, batch=2, steps=4, cfg=3.0, seed=11, save=True, sampler="euler", scheduler="karras"):
    return ux.v3.DistillLambdas.execute(model, cond(0.5), cond(-0.5), {"samples": torch.zeros(batch, 4, 8, 8)}, seed,
                                        cfg, sampler, scheduler, steps, 1.0, "heun", 2, save, objective="greedy")


def messages(ux):
    return [data for event, data, _ in ux.ui.messages if event == "dode.status"]


def comfy_validation_errors(node, inputs):
    """What ComfyUI's execution.validate_inputs (v0.3.64) reports for a V3 node's widget values: min/max for every
    input its validate_inputs does not name (all of them if it takes **kwargs: none), then one error per named input
    when validate_inputs fails."""
    spec = inspect.getfullargspec(node.validate_inputs)
    named, kwargs = spec.args[1:], spec.varkw is not None
    schema = {i.id: i for i in node.define_schema().inputs}
    errors = []
    for name, value in inputs.items():
        opts = schema[name].kwargs
        if name in named or kwargs:
            continue
        if "min" in opts and value < opts["min"]:
            errors.append(f"{name}: value {value} smaller than min of {opts['min']}")
        if "max" in opts and value > opts["max"]:
            errors.append(f"{name}: value {value} bigger than max of {opts['max']}")
    given = {k: v for k, v in inputs.items() if k in named or kwargs}
    result = node.validate_inputs(**given)
    if result is not True:
        errors += [f"{name} - {result}" for name in given]
    return errors


DISTILL_WIDGETS = {"seed": 0, "cfg": 3.0, "sampler_name": "euler", "scheduler": "karras", "steps": 4, "denoise": 1.0,
                   "teacher": "heun", "scale": 2, "save": True}


# 1. Distill λ caches ---------------------------------------------------------------------------------------------

def test_distill_report_is_no_input_the_seed_stays_fixed_and_it_is_an_output_node(fresh):
    schema = fresh.v3.DistillLambdas.define_schema()
    inputs = {i.id: i for i in schema.inputs}
    assert not {"report", "dode_report"} & set(inputs)  # the report is an output and a UI output, never an input
    assert schema.is_output_node  # saving is its job: a graph of Distill λ alone runs ("Prompt has no outputs")
    assert inputs["seed"].kwargs["control_after_generate"] is True and "fixed" in inputs["seed"].kwargs["tooltip"]
    js = (ROOT / "web" / "dode.js").read_text()
    assert 'control.value = "fixed"' in js  # the frontend starts the seed control at fixed (its default: randomize)
    assert "serialize: false" in js and "ComfyWidgets" not in js  # the report panel is kept out of the prompt
    out = distill(fresh, make_model(fresh))
    report = out.args[3]
    assert out.ui == {"text": [report]}  # shown on the node through onExecuted


# 2. validate_inputs names only what it checks ---------------------------------------------------------------------

def test_validate_inputs_leaves_comfyuis_own_range_checks_running(fresh):
    for node in (fresh.v3.DistillLambdas, fresh.v3.DODESampler, fresh.v3.LoadLambdas):
        spec = inspect.getfullargspec(node.validate_inputs)
        assert spec.varkw is None, node  # **kwargs would turn off ComfyUI's min/max checks for every input
    assert inspect.getfullargspec(fresh.v3.DistillLambdas.validate_inputs).args == ["cls", "scheduler"]
    assert "validate_inputs" not in fresh.v3.ModelOptions.__dict__  # ComfyUI's own checks only
    distill_node = fresh.v3.DistillLambdas
    assert comfy_validation_errors(distill_node, DISTILL_WIDGETS) == []
    assert comfy_validation_errors(distill_node, {**DISTILL_WIDGETS, "cfg": -3.0}) == \
        ["cfg: value -3.0 smaller than min of 0.0"]
    assert comfy_validation_errors(distill_node, {**DISTILL_WIDGETS, "denoise": 1.5}) == \
        ["denoise: value 1.5 bigger than max of 1.0"]
    (error,) = comfy_validation_errors(distill_node, {**DISTILL_WIDGETS, "scheduler": "dode"})  # one cause, one error
    assert error.startswith("scheduler - Distill λ fits a stock scheduler's grid")
    (error,) = comfy_validation_errors(distill_node, {**DISTILL_WIDGETS, "scheduler": "nope"})
    assert error.startswith("scheduler - scheduler: 'nope' is not one of")


def test_distill_offers_no_dode_scheduler_and_checks_fixed_choices_before_working(fresh):
    options = fresh.v3.DistillLambdas.define_schema().inputs[7].options
    assert "dode" not in options and "karras" in options
    fresh.samplers.KSampler.SCHEDULERS.append("later_pack")  # a scheduler another pack adds later still shows
    try:
        assert "later_pack" in {i.id: i for i in fresh.v3.DistillLambdas.define_schema().inputs}["scheduler"].options
    finally:
        fresh.samplers.KSampler.SCHEDULERS.remove("later_pack")
    with pytest.raises(ValueError, match=r"Distill λ: sampler_name: 'euler_x' is not one of"):
        distill(fresh, make_model(fresh), sampler="euler_x")
    with pytest.raises(ValueError, match=r"Distill λ: scheduler: Distill λ fits a stock scheduler"):
        distill(fresh, make_model(fresh), scheduler="dode")
    with pytest.raises(ValueError, match=r"D-ODE Sampler: sampler_name: 'nope'"):
        fresh.v3.DODESampler.execute("nope", fresh.v3.STORE_LOOKUP, True)
    with pytest.raises(ValueError, match=r"D-ODE Model Options: on_missing: 'maybe'"):
        fresh.v3.ModelOptions.execute(make_model(fresh), "maybe", "full", "heun", 2)
    assert not fresh.lambda_dir.exists()  # nothing ran


# 3. Load λ with an empty λ folder ---------------------------------------------------------------------------------

def test_load_lambdas_on_an_empty_folder_says_what_to_do(fresh):
    (option,) = {i.id: i for i in fresh.v3.LoadLambdas.define_schema().inputs}["lambda_file"].options
    assert option == "no λ files yet — run Distill λ first"  # never an empty combo ("undefined")
    for given in ({"lambda_file": option}, {}):  # the placeholder, or no value at all (no TypeError)
        problem = fresh.v3.LoadLambdas.validate_inputs(**given)
        assert problem.startswith("no λ files yet — run Distill λ first"), problem
        assert "undefined" not in problem
    with pytest.raises(ValueError, match="no λ files yet — run Distill λ first"):
        fresh.v3.LoadLambdas.execute(option)
    distill(fresh, make_model(fresh))
    (name,) = {i.id: i for i in fresh.v3.LoadLambdas.define_schema().inputs}["lambda_file"].options
    assert name.endswith("-euler.safetensors") and fresh.v3.LoadLambdas.validate_inputs(lambda_file=name) is True


# 4. The report on the node; example workflows with room -----------------------------------------------------------

def test_report_panel_is_compact_and_examples_leave_room_for_it():
    js = (ROOT / "web" / "dode.js").read_text()
    assert "480" not in js and "PANEL_HEIGHT = 140" in js and 'overflow: "auto"' in js and 'opacity: "1"' in js
    for path in sorted((ROOT / "example_workflows").glob("*.json")):
        nodes = json.loads(path.read_text())["nodes"]
        boxes = [(n["id"], n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
                 for n in nodes]  # 30: the title bar above pos
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not (a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]), (path.name, a[0], b[0])
        for node in nodes:
            if node["type"] == "DODEDistillLambdas":
                widgets = len(node["widgets_values"]) * 24 + len(node["outputs"]) * 20 + 40
                assert node["size"][1] >= widgets + 140, (path.name, node["size"])  # the report panel fits in it
                assert node["widgets_values"][1] == "fixed"
        assert any(n["type"] == "Note" and n["widgets_values"][0] for n in nodes), path.name


# 5. A miss the user chose *_dode for ------------------------------------------------------------------------------

def test_a_miss_is_a_warning_of_one_short_line_with_details_in_the_log(fresh, caplog):
    model = make_model(fresh)
    lat = torch.zeros(1, 4, 8, 8)
    (fresh.lambda_dir).mkdir(parents=True)
    (fresh.lambda_dir / "broken.safetensors").write_bytes(b"\x00" * 20)
    distill(fresh, model, cfg=4.0)  # an entry that differs in cfg: the log names it as the nearest
    fresh.ui.messages.clear()
    with caplog.at_level("WARNING", logger="dode"):
        fresh.sample.sample(model, fresh.sample.prepare_noise(lat, 1), 4, 3.0, "euler_dode", "karras", cond(0.5),
                            cond(-0.5), lat, seed=1)
    (miss,) = [m for m in messages(fresh) if "ran as plain euler" in m["toast"]]
    assert miss["level"] == "warning"
    assert "\n" not in miss["toast"] and len(miss["toast"]) < 160, miss["toast"]
    assert "fp1-" not in miss["toast"] and "nearest entry" not in miss["toast"] and "4 steps, cfg 3" in miss["toast"]
    assert "nearest entry" in miss["text"] and "which differs in cfg 4, not 3" in caplog.text  # the details: the log
    js = (ROOT / "web" / "dode.js").read_text()
    assert "data.toast ?? data.text" in js and 'warning: "warn"' in js


# 6. Quiet spots ---------------------------------------------------------------------------------------------------

def test_quiet_spots_speak_up_without_internals(fresh):
    model = make_model(fresh)
    out = distill(fresh, model, batch=1)
    (single,) = [m for m in messages(fresh) if "a batch of 1" in m["toast"]]
    assert single["level"] == "warning" and "16 or more" in single["toast"]
    (done,) = [m for m in messages(fresh) if m["toast"].startswith("Distill λ: euler, 4 steps (karras), cfg 3")]
    for internal in ("fp1-", "latent rows", "network calls", "/"):
        assert internal not in done["toast"].replace("docs/", ""), (internal, done["toast"])
    assert "saved to " in done["toast"] and "distance to the teacher" in done["toast"]
    fresh.v3.SaveLambdas.execute(out.args[1], "my_set")
    (saved,) = [m for m in messages(fresh) if m["toast"].startswith("Save λ:")]
    assert saved["toast"] == "Save λ: saved 1 λ entry to my_set.safetensors"
    schema = fresh.v3.DistillLambdas.define_schema()
    assert all(o.tooltip for o in schema.outputs), [o.display_name for o in schema.outputs if not o.tooltip]
    assert {i.id: i for i in schema.inputs}["latent_image"].kwargs["tooltip"] == LATENT_TIP
    for node in fresh.nodes.NODE_CLASS_MAPPINGS.values():
        assert all(o.tooltip for o in node.define_schema().outputs), node
    import dode
    # ComfyUI prints an exception's type as module + name: the public name, not the pack's install path
    for error in (dode.LambdaFileError, dode.LambdaNotFound):
        assert f"{error.__module__}.{error.__qualname__}" == f"dode.{error.__name__}"


# 7. Managing λ files ---------------------------------------------------------------------------------------------

def test_lambda_files_lists_entries_for_the_model_and_removes_one_atomically(fresh, monkeypatch):
    model, other = make_model(fresh), make_model(fresh, seed=5)
    distill(fresh, model, steps=4)
    distill(fresh, model, steps=5)
    distill(fresh, other, steps=4)
    node = fresh.v3.LambdaFiles
    assert node.define_schema().is_output_node
    out = node.execute(model)
    rows = out.ui["dode_entries"]
    assert len(rows) == 3 and sum(r["this_model"] for r in rows) == 2
    assert all("fp1-" not in r["title"] for r in rows)
    assert out.args[0].splitlines()[0].endswith("(marked *)")
    stamp = node.fingerprint_inputs(model)
    mine = [r for r in rows if r["this_model"]]
    path = fresh.lambda_dir / mine[0]["file"]

    import dode.lambdas.atomic as atomic
    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(atomic.os, "replace", fail)  # the rewrite fails: the file is as it was, no temp file left
    status, answer = fresh.routes.remove({"file": mine[0]["file"], "id": mine[0]["id"]})
    assert status == 400 and "/" not in answer["error"]
    monkeypatch.undo()
    assert len(dode_entries(path)) == 2 and not list(fresh.lambda_dir.glob(".dode-*"))

    status, answer = fresh.routes.remove({"file": mine[0]["file"], "id": mine[0]["id"]})
    assert status == 200 and answer["left"] == 1 and answer["title"] == mine[0]["title"]
    (kept,) = dode_entries(path)  # the other entry of that file is still there, whole
    assert entry_id(kept) == mine[1]["id"]
    assert node.fingerprint_inputs(model) != stamp  # the node lists again after a change
    status, answer = fresh.routes.remove({"file": mine[0]["file"], "id": mine[0]["id"]})
    assert status == 400 and "removed already" in answer["error"]
    for bad in ({"file": "../../etc/passwd", "id": "x"}, {"file": None}, "nonsense"):
        assert fresh.routes.remove(bad)[0] == 400
    assert fresh.routes.remove({"file": mine[1]["file"], "id": mine[1]["id"]})[0] == 200
    assert not path.exists()  # the last entry gone: the file goes too
    assert len(node.execute(None).ui["dode_entries"]) == 1 and node.execute(None).ui["dode_model"] == [None]


def dode_entries(path):
    import dode
    return dode.load_lambdas(path)


def test_routes_register_once_on_comfyuis_server(fresh):
    pytest.importorskip("aiohttp", reason="the routes need aiohttp (ComfyUI has it)")
    from aiohttp import web

    class Server:
        routes = web.RouteTableDef()

    server = Server()
    assert fresh.routes.register(server) and fresh.routes.register(server)
    paths = sorted((r.method, r.path) for r in server.routes)
    assert paths == [("GET", "/dode/lambdas"), ("POST", "/dode/lambdas/remove")]


def test_one_lock_file_per_folder_and_no_stray_locks(fresh):
    fresh.lambda_dir.mkdir(parents=True)
    (fresh.lambda_dir / "old-euler.safetensors.lock").write_bytes(b"")  # what an older dode left
    model = make_model(fresh)
    distill(fresh, model, steps=4)
    distill(fresh, model, steps=5)
    distill(fresh, make_model(fresh, seed=3), steps=4)
    names = sorted(p.name for p in fresh.lambda_dir.iterdir())
    assert [n for n in names if n.endswith(".lock")] == [".dode.lock", "old-euler.safetensors.lock"], names
    import dode
    path = str(fresh.lambda_dir / "old-euler.safetensors")
    entry = dode_entries(next(fresh.lambda_dir.glob("*-euler.safetensors")))[0]
    dode.LambdaStore().add(path, entry)  # a write to that file removes its legacy lock
    assert not os.path.exists(path + ".lock")
    doc = (ROOT / "docs" / "comfyui.md").read_text()
    assert ".dode.lock" in doc  # documented where users see their λ folder
