"""The ComfyUI adapter (nodes/) against the stub in tests/comfy_stub (no ComfyUI needed; runs in CI)."""
import importlib
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dode.samplers import flow_option, get_solver

torch.set_num_threads(1)

STUB = str(Path(__file__).resolve().parent / "comfy_stub")
STUB_TOPS = ("comfy", "comfy_api", "folder_paths", "latent_preview", "server")


def _drop(prefixes):
    for name in [n for n in sys.modules if n.split(".")[0] in prefixes or n.startswith("dode.nodes")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def cx(tmp_path_factory):
    """The stubbed ComfyUI with the pack's adapter imported into it (as ComfyUI would import it)."""
    base = tmp_path_factory.mktemp("comfy_base")
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in STUB_TOPS or n.startswith("dode.nodes")}
    old_env = os.environ.get("DODE_STUB_COMFY_BASE")
    os.environ["DODE_STUB_COMFY_BASE"] = str(base)
    sys.path.insert(0, STUB)
    _drop(STUB_TOPS)
    try:
        ns = type("CX", (), {})()
        ns.base = base
        ns.folder_paths = importlib.import_module("folder_paths")
        for mod in ("comfy.samplers", "comfy.sample", "comfy.utils", "comfy.model_management", "comfy.model_base",
                    "comfy.model_patcher", "comfy.model_sampling"):
            setattr(ns, mod.split(".")[-1], importlib.import_module(mod))
        ns.kds = importlib.import_module("comfy.k_diffusion.sampling")
        ns.latent_preview = importlib.import_module("latent_preview")
        ns.nodes = importlib.import_module("dode.nodes")
        ns.sampling = importlib.import_module("dode.nodes.sampling")
        ns.context = importlib.import_module("dode.nodes.context")
        ns.options = importlib.import_module("dode.nodes.options")
        ns.resolve = importlib.import_module("dode.lambdas.resolve")
        ns.identity = importlib.import_module("dode.nodes.identity")
        ns.store = importlib.import_module("dode.nodes.store")
        ns.v3 = importlib.import_module("dode.nodes.v3")
        ns.schedule = importlib.import_module("dode.nodes.schedule")
        ns.feedback = importlib.import_module("dode.nodes.feedback")
        ns.server = importlib.import_module("server")
        ns.lambda_dir = base / "models" / "dode_lambdas"
        yield ns
    finally:
        sys.path.remove(STUB)
        _drop(STUB_TOPS)
        sys.modules.update(saved)
        if old_env is None:
            os.environ.pop("DODE_STUB_COMFY_BASE", None)
        else:
            os.environ["DODE_STUB_COMFY_BASE"] = old_env


@pytest.fixture
def clean(cx):
    shutil.rmtree(cx.lambda_dir, ignore_errors=True)
    cx.ui = cx.server.PromptServer()  # a fresh PromptServer.instance: what would reach the browser
    cx.resolve.UNSAVED.clear()
    cx.feedback._told.clear()
    cx.utils.PROGRESS_BAR_HOOK = None
    cx.model_management.interrupt_current_processing(False)
    cx.latent_preview.PREVIEW_METHOD = "none"
    yield cx
    cx.utils.PROGRESS_BAR_HOOK = None
    cx.model_management.interrupt_current_processing(False)
    cx.latent_preview.PREVIEW_METHOD = "none"


def make_model(cx, flow=False, seed=0):
    mb = cx.model_base
    return cx.model_patcher.ModelPatcher(mb.BaseModel(mb.ModelType.FLOW if flow else mb.ModelType.EPS, seed=seed))


def cond(value):
    return [[torch.full((1, 3, 8), float(value)), {}]]


def latent(batch=3):
    return {"samples": torch.zeros(batch, 4, 8, 8)}


def ksample(cx, model, sampler, seed=1, steps=6, cfg=3.0, scheduler="karras", denoise=1.0, batch=1):
    lat = latent(batch)["samples"]
    noise = cx.sample.prepare_noise(lat, seed)
    return cx.sample.sample(model, noise, steps, cfg, sampler, scheduler, cond(0.5), cond(-0.5), lat,
                            denoise=denoise, seed=seed)


def distill(cx, model, sampler="euler", steps=6, cfg=3.0, scheduler="karras", denoise=1.0, batch=3, scale=4,
            save=True, sigmas=None, seed=11, teacher="heun", objective="greedy", fit_schedule=False, outputs=5):
    out = cx.v3.DistillLambdas.execute(model, cond(0.5), cond(-0.5), latent(batch), seed, cfg, sampler, scheduler,
                                       steps, denoise, teacher, scale, save, sigmas=sigmas, objective=objective,
                                       fit_schedule=fit_schedule)
    return out.args[:outputs]


def rmse(a, b):
    return (a - b).double().square().mean().sqrt().item()


# --- registration ---------------------------------------------------------------------------------------------------

def test_dropdown_registration_in_place_and_idempotent(cx):
    from dode import SAMPLER_NAMES
    cs = cx.samplers
    assert cs.KSampler.SAMPLERS is cs.SAMPLER_NAMES
    labels = [f"{n}_dode" for n in SAMPLER_NAMES]
    for label in labels:
        assert cs.SAMPLER_NAMES.count(label) == 1 and cs.KSAMPLER_NAMES.count(label) == 1
    fns = {label: getattr(cx.kds, f"sample_{label}") for label in labels}
    assert all(fn.dode_solver == label[:-5] for label, fn in fns.items())
    before = (list(cs.SAMPLER_NAMES), list(cs.KSAMPLER_NAMES))
    assert cx.sampling.register_samplers() == labels
    cx.nodes.setup()
    assert (list(cs.SAMPLER_NAMES), list(cs.KSAMPLER_NAMES)) == before
    assert fns == {label: getattr(cx.kds, f"sample_{label}") for label in labels}
    assert cx.nodes.REGISTERED_SAMPLERS == labels and not cx.nodes.PROBLEMS


def test_foreign_sampler_of_the_same_name_is_left_alone(cx, caplog):
    kd = cx.kds
    ours = kd.sample_euler_dode

    def foreign(model, x, sigmas, **kwargs):
        return x

    kd.sample_euler_dode = foreign
    try:
        with caplog.at_level(logging.WARNING, logger="dode"):
            names = cx.sampling.register_samplers()
        assert "euler_dode" not in names and kd.sample_euler_dode is foreign
        assert "sample_euler_dode already exists" in caplog.text
    finally:
        kd.sample_euler_dode = ours


def test_nodes_and_lambda_folder(cx):
    assert set(cx.nodes.NODE_CLASS_MAPPINGS) == {"DODEDistillLambdas", "DODESampler", "DODELoadLambdas",
                                                 "DODESaveLambdas", "DODEModelOptions"}
    for node_id, cls in cx.nodes.NODE_CLASS_MAPPINGS.items():
        schema = cls.define_schema()
        schema.validate()
        assert schema.category == "sampling/dode" and cx.nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id]
        untipped = [i.id for i in schema.inputs if not i.kwargs.get("tooltip")]
        assert not untipped, (node_id, untipped)  # every input says what it is for
    schema = cx.v3.DistillLambdas.define_schema()
    outputs = [o.io_type for o in schema.outputs]
    # new outputs go last (links are by index), new inputs go last and are optional (old workflows keep their
    # widget values in order, old API prompts still validate)
    assert outputs == ["SAMPLER", "DODE_LAMBDAS", "LATENT", "STRING", "IMAGE", "SIGMAS", "MODEL"]
    ids = [i.id for i in schema.inputs]
    assert ids == ["model", "positive", "negative", "latent_image", "seed", "cfg", "sampler_name", "scheduler",
                   "steps", "denoise", "teacher", "scale", "save", "sigmas", "objective", "fit_schedule"]
    assert all(i.optional for i in schema.inputs[-3:])
    inputs = {i.id: i for i in schema.inputs}
    assert inputs["cfg"].default == 8.0  # KSampler's default
    assert inputs["denoise"].kwargs["min"] > 0  # a denoise the run accepts
    assert inputs["fit_schedule"].default is False
    assert inputs["scheduler"].options is cx.samplers.KSampler.SCHEDULERS  # by reference: later schedulers show
    paths, exts = cx.folder_paths.folder_names_and_paths["dode_lambdas"]
    assert paths[0] == str(cx.lambda_dir) and exts == {".safetensors"}


def test_combo_values_are_validated(cx):
    """ComfyUI v0.3.x does not check COMBO values of V3 nodes; the nodes do, with one message naming the input."""
    v3 = cx.v3
    assert v3.DistillLambdas.validate_inputs(scheduler="karras", sampler_name="euler", teacher="heun",
                                             objective="final") is True
    bad = v3.DistillLambdas.validate_inputs(scheduler="nope", sampler_name="euler_x", teacher="heun")
    assert "scheduler: 'nope' is not one of" in bad and "sampler_name: 'euler_x'" in bad
    assert "Distill λ fits a stock scheduler" in v3.DistillLambdas.validate_inputs(scheduler="dode")
    assert "objective: 'best'" in v3.DistillLambdas.validate_inputs(objective="best")
    assert "on_missing: 'maybe'" in v3.ModelOptions.validate_inputs(on_missing="maybe", identity="full")
    assert v3.ModelOptions.validate_inputs(on_missing="stock", identity="full", teacher="heun") is True
    assert "lambda_file: 'gone.safetensors'" in v3.DODESampler.validate_inputs(sampler_name="euler",
                                                                              lambda_file="gone.safetensors")
    with pytest.raises(ValueError, match="scheduler: 'nope'"):
        distill(cx, make_model(cx), scheduler="nope", save=False)


def test_lambda_folder_keeps_extra_model_paths(cx, tmp_path):
    fp = cx.folder_paths
    saved = fp.folder_names_and_paths.pop("dode_lambdas")
    try:
        fp.add_model_folder_path("dode_lambdas", str(tmp_path / "shared"), is_default=True)  # extra_model_paths.yaml
        paths = cx.store.register_folder()
        assert paths == [str(tmp_path / "shared"), str(cx.lambda_dir)]
        assert cx.store.save_folder() == str(tmp_path / "shared") and (tmp_path / "shared").is_dir()
        assert cx.store.register_folder() == paths  # idempotent
    finally:
        fp.folder_names_and_paths["dode_lambdas"] = saved


ROOT_BLOCK = """
import sys
sys.path.insert(0, {stub!r})
{extra}
import folder_paths, comfy, comfy.samplers
import dode
print("MAPPINGS", sorted(getattr(dode, "NODE_CLASS_MAPPINGS", {{"absent": 1}})))
print("NAMES", [n for n in comfy.samplers.SAMPLER_NAMES if n.endswith("_dode")])
print("SCHEDULERS", [n for n in comfy.samplers.SCHEDULER_NAMES if n == "dode"])
print("WEB", getattr(dode, "WEB_DIRECTORY", None))
"""


def run_python(code, tmp_path):
    env = {**os.environ, "DODE_STUB_COMFY_BASE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=str(tmp_path))


def test_root_package_registers_inside_comfyui(tmp_path):
    out = run_python(ROOT_BLOCK.format(stub=STUB, extra=""), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "MAPPINGS ['DODEDistillLambdas', 'DODELoadLambdas', 'DODEModelOptions', 'DODESampler', " \
           "'DODESaveLambdas']" in out.stdout
    assert "'euler_dode'" in out.stdout and "SCHEDULERS ['dode']" in out.stdout and "WEB ./web" in out.stdout
    assert (Path(dode_root()) / "web" / "dode.js").is_file()


def dode_root():
    import dode
    return os.path.dirname(dode.__file__)


def test_missing_v3_api_keeps_comfyui_and_the_dropdown_working(tmp_path):
    out = run_python(ROOT_BLOCK.format(stub=STUB, extra="sys.modules['comfy_api'] = None"), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "MAPPINGS []" in out.stdout and "'euler_dode'" in out.stdout and "SCHEDULERS ['dode']" in out.stdout
    assert "the D-ODE nodes are unavailable" in out.stderr


def test_library_import_does_not_touch_comfy(tmp_path):
    out = run_python("import sys, dode\nprint('COMFY', 'comfy' in sys.modules, hasattr(dode, 'NODE_CLASS_MAPPINGS'))",
                     tmp_path)
    assert out.returncode == 0, out.stderr
    assert "COMFY False False" in out.stdout


# --- the by-name sampler ---------------------------------------------------------------------------------------------

def test_dode_by_name_without_lambdas_is_stock_and_says_how_to_distill(clean, caplog):
    model = make_model(clean)
    with caplog.at_level(logging.INFO, logger="dode"):
        dode = ksample(clean, model, "euler_dode")
    assert torch.equal(dode, ksample(clean, model, "euler"))
    assert "euler_dode: stock euler (λ = 0): no λ for" in caplog.text and "Distill λ" in caplog.text
    assert not clean.lambda_dir.exists()  # created lazily, on the first write only


def test_distill_saves_and_the_dropdown_uses_it(clean, caplog):
    model = make_model(clean)
    sampler, lambdas, teacher_latent, report, chart = distill(clean, model)
    (path,) = clean.lambda_dir.glob("*.safetensors")
    assert path.name.endswith("-euler.safetensors") and "saved:" in report
    from dode import load_lambdas
    (entry,) = load_lambdas(path)
    assert entry.sampler == "euler" and entry.steps == 6 and entry.cfg == 3.0 and entry.lambdas[1:].abs().sum() > 0
    assert entry.model == lambdas.entries[0].model and entry.metrics["model_name"] == "model"
    assert teacher_latent["samples"].shape == (3, 4, 8, 8)
    assert not list(clean.lambda_dir.glob(".dode-*"))
    # the λ chart: a ComfyUI IMAGE, [1, H, W, 3] float in [0, 1], with ink on it
    assert chart.ndim == 4 and chart.shape[0] == 1 and chart.shape[3] == 3 and chart.shape[1] >= 200
    assert chart.dtype == torch.float32 and 0 <= chart.min() < 0.5 and chart.max() == 1.0
    assert "could not draw" not in caplog.text

    # the teacher latent is the distillation batch's reference: D-ODE lands closer to it than stock does
    noise = clean.sample.prepare_noise(latent(3)["samples"], 11)
    stock = clean.sample.sample_custom(model, noise, 3.0, clean.samplers.ksampler("euler"),
                                       clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0), cond(0.5),
                                       cond(-0.5), latent(3)["samples"], seed=11)
    dode = clean.sample.sample_custom(model, noise, 3.0, sampler,
                                      clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0), cond(0.5),
                                      cond(-0.5), latent(3)["samples"], seed=11)
    assert rmse(dode, teacher_latent["samples"]) < 0.5 * rmse(stock, teacher_latent["samples"])

    # the stock KSampler path with euler_dode now finds λ in the store, and equals the returned SAMPLER
    with caplog.at_level(logging.INFO, logger="dode"):
        by_name = ksample(clean, model, "euler_dode", seed=11, batch=3)
    assert "euler_dode: λ from" in caplog.text
    assert torch.equal(by_name, dode)
    assert not torch.equal(by_name, ksample(clean, model, "euler", seed=11, batch=3))


def test_store_hit_needs_same_grid_cfg_and_model(clean, caplog):
    model = make_model(clean)
    distill(clean, model, steps=5, denoise=0.5)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dode"):
        ksample(clean, model, "euler_dode", steps=5, denoise=0.5)  # the same partial-denoise grid: a hit
        assert "λ from" in caplog.text
        for kwargs in ({"steps": 6, "denoise": 0.5}, {"steps": 5, "denoise": 0.5, "cfg": 4.0},
                       {"steps": 5, "denoise": 0.5, "scheduler": "simple"}):
            caplog.clear()
            ksample(clean, model, "euler_dode", **kwargs)
            assert "(λ = 0): no λ for" in caplog.text, kwargs
        caplog.clear()
        ksample(clean, make_model(clean, seed=1), "euler_dode", steps=5, denoise=0.5)  # other weights
        assert "(λ = 0): no λ for" in caplog.text


# --- Distill λ: bad input, progress, interruption --------------------------------------------------------------------

def test_distill_rejects_bad_settings(clean, caplog):
    model = make_model(clean)
    with pytest.raises(ValueError, match="at least 2 steps"):
        distill(clean, model, steps=1)
    with pytest.raises(ValueError, match="denoise must be > 0"):
        distill(clean, model, denoise=0.0)
    with pytest.raises(ValueError, match="at least 2 steps"):
        distill(clean, model, sigmas=torch.tensor([14.6, 0.0]))
    with caplog.at_level(logging.WARNING, logger="dode"):
        distill(clean, model, batch=1, save=False)
    assert "batch has 1 sample" in caplog.text
    assert not clean.lambda_dir.exists()


def test_distill_with_custom_sigmas(clean):
    model = make_model(clean)
    sigmas = torch.tensor([10.0, 4.0, 1.5, 0.5, 0.1, 0.0])
    _, lambdas, *_ = distill(clean, model, sigmas=sigmas)
    (entry,) = lambdas.entries
    assert entry.same_grid(sigmas) and entry.metrics["scheduler"] == "custom sigmas"


def assert_interrupt_leaves_no_file(clean, model):
    """Interrupting a distillation mid-way (from the progress bar) raises and leaves no λ file."""
    def interrupting_hook(value, total, preview, node_id=None):
        if value >= 5:
            clean.model_management.interrupt_current_processing(True)
        clean.model_management.throw_exception_if_processing_interrupted()

    clean.utils.PROGRESS_BAR_HOOK = interrupting_hook
    with pytest.raises(clean.model_management.InterruptProcessingException):
        distill(clean, model, steps=4, scale=3)
    assert not clean.lambda_dir.exists() or not list(clean.lambda_dir.iterdir())


def test_distill_progress_and_interrupt_leave_no_file(clean):
    model = make_model(clean)
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total))
        clean.model_management.throw_exception_if_processing_interrupted()

    clean.utils.PROGRESS_BAR_HOOK = hook
    distill(clean, model, steps=4, scale=3, save=False)
    totals = {t for _, t in seen}
    assert len(totals) == 1 and seen[-1][0] == seen[-1][1]
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)  # monotone over teacher, stock and student

    assert_interrupt_leaves_no_file(clean, model)


def test_distill_sends_latent_previews_on_the_one_progress_bar(clean, caplog):
    model = make_model(clean)
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total, preview))
        clean.model_management.throw_exception_if_processing_interrupted()

    clean.utils.PROGRESS_BAR_HOOK = hook
    distill(clean, model, steps=4, scale=3, save=False)  # previews off (ComfyUI's default): none sent
    assert seen and all(p is None for *_, p in seen)

    clean.latent_preview.PREVIEW_METHOD = "latent2rgb"
    seen.clear()
    with caplog.at_level(logging.WARNING, logger="dode"):
        distill(clean, model, steps=4, scale=3, save=False)
    assert "previews are off" not in caplog.text
    assert len({t for _, t, _ in seen}) == 1 and seen[-1][0] == seen[-1][1]  # still one bar over all three phases
    assert [v for v, *_ in seen] == sorted(v for v, *_ in seen)
    teacher, stock, student = 4 * 3, 4, 4  # one callback per step of each phase, each with a preview
    assert len(seen) == teacher + stock + student and seen[-1][1] == teacher + stock + student
    fmt, image, size = seen[-1][2]
    assert fmt == "JPEG" and image.size == (8, 8) and size == clean.latent_preview.MAX_PREVIEW_RESOLUTION

    assert_interrupt_leaves_no_file(clean, model)


def test_a_failing_previewer_does_not_stop_distilling(clean, caplog, monkeypatch):
    class Broken:
        def decode_latent_to_preview_image(self, preview_format, x0):
            raise RuntimeError("no decoder")

    monkeypatch.setattr(clean.latent_preview, "get_previewer", lambda device, latent_format: Broken())
    seen = []
    clean.utils.PROGRESS_BAR_HOOK = lambda value, total, preview, node_id=None: seen.append(preview)
    with caplog.at_level(logging.WARNING, logger="dode"):
        _, lambdas, *_ = distill(clean, make_model(clean), steps=4, scale=3, save=False)
    assert lambdas.entries and all(p is None for p in seen)
    assert caplog.text.count("previews are off for this distillation") == 1


# --- D-ODE Sampler, Load/Save λ --------------------------------------------------------------------------------------

def test_dode_sampler_node_explicit_lambdas(clean):
    model = make_model(clean)
    sampler, lambdas, *_ = distill(clean, model, save=False)
    node = clean.v3.DODESampler
    sigmas6 = clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0)
    noise = clean.sample.prepare_noise(latent(1)["samples"], 3)

    def run(smp, sigmas=sigmas6, cfg=3.0, m=model):
        return clean.sample.sample_custom(m, noise, cfg, smp, sigmas, cond(0.5), cond(-0.5), latent(1)["samples"],
                                          seed=3)

    explicit = node.execute("euler", "(λ store lookup)", True, lambdas=lambdas).args[0]
    assert torch.equal(run(explicit), run(sampler))
    from dode import LambdaNotFound
    with pytest.raises(LambdaNotFound, match="6 steps, not 8"):  # another grid: an error on an explicit node
        run(explicit, sigmas=clean.v3.compute_sigmas(model, "euler", "karras", 8, 1.0))
    with pytest.raises(LambdaNotFound, match="cfg"):
        run(explicit, cfg=5.0)
    with pytest.raises(LambdaNotFound, match="another model"):
        run(explicit, m=make_model(clean, seed=2))
    loose = node.execute("euler", "(λ store lookup)", False, lambdas=lambdas).args[0]
    assert not torch.equal(run(loose, cfg=5.0), run(clean.samplers.ksampler("euler"), cfg=5.0))
    other = make_model(clean, seed=2)  # not strict: another model's run still gets these λ
    assert torch.equal(run(loose, m=other), run(explicit_loose_on(clean, lambdas), m=other))
    assert not torch.equal(run(loose, m=other), run(clean.samplers.ksampler("euler"), m=other))
    with pytest.raises(LambdaNotFound, match="sampler euler"):
        run(node.execute("heun", "(λ store lookup)", True, lambdas=lambdas).args[0])
    # no λ set and store lookup: behaves like heun_dode by name (stock on a miss)
    store_sampler = node.execute("heun", "(λ store lookup)", True).args[0]
    assert torch.equal(run(store_sampler), run(clean.samplers.ksampler("heun_dode")))


def test_save_load_and_cache_invalidation(clean):
    model = make_model(clean)
    _, lambdas, *_ = distill(clean, model, save=False)
    clean.v3.SaveLambdas.execute(lambdas, "my set/../x")
    (name,) = clean.store.file_list()
    assert name == "my_set_.._x.safetensors"  # a plain file name in the λ folder, whatever was typed
    loaded, info = clean.v3.LoadLambdas.execute(name).args
    assert len(loaded.entries) == 1 and torch.equal(loaded.entries[0].lambdas, lambdas.entries[0].lambdas)
    assert "euler, 6 steps" in info
    stamp = clean.v3.LoadLambdas.fingerprint_inputs(lambda_file=name)
    assert stamp == clean.v3.DODESampler.fingerprint_inputs(lambda_file=name)
    assert clean.v3.DODESampler.fingerprint_inputs(lambda_file="(λ store lookup)") == ""
    _, other, *_ = distill(clean, model, steps=4, save=False)  # a second entry merged into the same file
    clean.v3.SaveLambdas.execute(other, "my set/../x")
    assert clean.v3.LoadLambdas.fingerprint_inputs(lambda_file=name) != stamp
    assert len(clean.v3.LoadLambdas.execute(name).args[0].entries) == 2
    assert clean.v3.LoadLambdas.validate_inputs(lambda_file="nope.safetensors").startswith("λ file 'nope")
    assert clean.v3.LoadLambdas.validate_inputs(lambda_file=name) is True
    sampler = clean.v3.DODESampler.execute("euler", name, True).args[0]
    assert sampler.extra_options["dode_lambdas"].source == f"λ file {name}"


# --- D-ODE Model Options (policy through model_options) --------------------------------------------------------------

def with_options(cx, model, **kwargs):
    defaults = {"on_missing": "stock", "identity": "full", "teacher": "heun", "scale": 3}
    return cx.v3.ModelOptions.execute(model, **{**defaults, **kwargs}).args[0]


def test_policy_error_and_auto_distill(clean, caplog):
    model = make_model(clean)
    with pytest.raises(RuntimeError, match="no λ for"):
        ksample(clean, with_options(clean, model, on_missing="error"), "euler_dode")
    assert "dode" not in model.model_options  # the patch node works on a clone

    plain = ksample(clean, model, "dpmpp_2m_dode", batch=2)  # a miss: λ = 0
    auto = with_options(clean, model, on_missing="auto_distill")
    with caplog.at_level(logging.INFO, logger="dode"):
        first = ksample(clean, auto, "dpmpp_2m_dode", batch=2)
    assert "auto-distilling" in caplog.text
    (path,) = clean.lambda_dir.glob("*-dpmpp_2m.safetensors")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dode"):
        second = ksample(clean, auto, "dpmpp_2m_dode", batch=2)  # now a store hit with the fitted λ
    assert "λ from" in caplog.text and torch.allclose(first, second, atol=1e-5)
    assert not torch.equal(first, plain)


def test_attached_lambdas_and_identity_mode(clean, caplog):
    model = make_model(clean)
    _, lambdas, *_ = distill(clean, model, save=False)
    attached = with_options(clean, model, lambdas=lambdas)
    with caplog.at_level(logging.INFO, logger="dode"):
        hit = ksample(clean, attached, "euler_dode")
    assert "λ from Distill λ" in caplog.text
    assert not torch.equal(hit, ksample(clean, model, "euler"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dode"):
        ksample(clean, attached, "euler_dode", steps=5)  # does not fit: a warning, then the store, then stock
    assert "the λ set attached to the model does not fit" in caplog.text and "(λ = 0): no λ for" in caplog.text

    lora = model.clone()
    lora.add_patches({"diffusion_model.proj.weight": ("diff", (torch.full((4, 4, 1, 1), 0.01),))}, 0.8)
    full = clean.identity.fingerprint
    assert full(lora).key != full(model).key
    assert full(lora, "ignore_patches").key == full(model, "ignore_patches").key


# --- model identity --------------------------------------------------------------------------------------------------

def test_identity_is_stable_and_tracks_what_matters(clean, tmp_path, monkeypatch):
    ident = clean.identity
    model = make_model(clean)
    a = ident.fingerprint(model)
    assert a == ident.fingerprint(model.clone()) and a.key.startswith("fp1-") and a.base.startswith("weights:")
    assert a.key == ident.fingerprint(make_model(clean)).key  # same weights, new objects (a new process)
    assert a.key != ident.fingerprint(make_model(clean, seed=3)).key
    assert a.key != ident.fingerprint(make_model(clean, flow=True)).key

    shifted = make_model(clean, flow=True)
    base_flow = ident.fingerprint(shifted).key
    patched = shifted.clone()
    patched.add_object_patch("model_sampling", type(shifted.model.model_sampling)(shift=6.0))  # ModelSamplingSD3
    assert ident.fingerprint(patched).key != base_flow
    same = shifted.clone()
    same.add_object_patch("model_sampling", type(shifted.model.model_sampling)(shift=3.0))
    assert ident.fingerprint(same).key == base_flow

    # a LoRA merged into the weights in place (ComfyUI keeps the original in ModelPatcher.backup) keeps the base
    merged = make_model(clean)
    weight = merged.model.diffusion_model.proj.weight
    merged.backup["diffusion_model.proj.weight"] = type("Backup", (), {"weight": weight.detach().clone()})()
    with torch.no_grad():
        weight.add_(0.5)
    assert ident.weights_digest(merged) == ident.weights_digest(model)

    # memoised: the second call does not read the weights again
    monkeypatch.setattr(model.model, "state_dict", lambda *a, **k: pytest.fail("weights read twice"))
    assert ident.fingerprint(model) == a

    # newer ComfyUI: the checkpoint file, hashed by content (a renamed copy is the same model)
    ckpt = tmp_path / "my_model.safetensors"
    from safetensors.torch import save_file
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(ckpt))
    on_file = make_model(clean)
    on_file.cached_patcher_init = (object, (str(ckpt), {}))
    f = ident.fingerprint(on_file)
    assert f.base.startswith("file:") and f.name == "my_model"
    # the bare checkpoint also carries its AutoV2 (the WebUI's identity), hashed once per file version
    import hashlib
    assert a.aliases == () and f.aliases == (hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10],)
    assert f.ids == (f.key, *f.aliases)
    monkeypatch.setattr(sys.modules["dode.lambdas.identity"], "hashlib", None)
    assert ident.fingerprint(on_file) == f
    monkeypatch.undo()
    copy = tmp_path / "renamed.safetensors"
    shutil.copy(ckpt, copy)
    on_copy = make_model(clean)
    on_copy.cached_patcher_init = (object, (str(copy), {}))
    assert ident.fingerprint(on_copy).key == f.key
    save_file({"w": torch.arange(1000, dtype=torch.float32) + 1}, str(copy))
    stat = os.stat(copy)  # a real rewrite lands on a later mtime tick; a coarse clock may not show it here
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert ident.fingerprint(on_copy).key != f.key


def test_flow_models_pass_comfyui_offset_first_sigma(clean):
    flow = make_model(clean, flow=True)
    ms = flow.model.model_sampling
    assert clean.context.comfy_flow(ms) == pytest.approx(ms.percent_to_sigma(1e-4))
    assert 0 < clean.context.comfy_flow(ms) < 1
    assert clean.context.comfy_flow(make_model(clean).model.model_sampling) is False
    # only the solvers whose stock update depends on it take it (test_lambda_runs_pass_comfyui_flow_option)
    offset = clean.context.comfy_flow(ms)
    kwargs = [flow_option(get_solver(name), flow) for name, flow in (("dpmpp_3m", offset), ("euler", offset),
                                                                      ("dpmpp_2s", False))]
    assert kwargs == [{"flow": offset}, {}, {}]


def explicit_loose_on(cx, lambdas):
    """The SAMPLER Distill λ would return for ``lambdas`` with strict off."""
    return cx.samplers.KSAMPLER(cx.sampling.make_sampler_function("euler"),
                                extra_options={"dode_lambdas": lambdas, "dode_strict": False})


def custom(cx, model, sampler, sigmas, seed=1, cfg=3.0, batch=1):
    lat = latent(batch)["samples"]
    noise = cx.sample.prepare_noise(lat, seed)
    return cx.sample.sample_custom(model, noise, cfg, sampler, sigmas, cond(0.5), cond(-0.5), lat, seed=seed)


def core_sampler(cx, name, lambdas=None, flow=False):
    """A SAMPLER that runs the dode core directly (what the adapter must reproduce)."""
    import dode

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return dode.sample(model, x, sigmas, name, lambdas=lambdas, extra_args=extra_args, callback=callback,
                           disable=disable, flow=flow)

    return cx.samplers.KSAMPLER(fn)


def told(cx, part):
    """The dode.status texts sent to the browser that contain ``part``."""
    return [data["text"] for event, data, sid in cx.ui.messages if event == "dode.status" and part in data["text"]]


# --- *_dode without λ is the host's stock sampler; flow= reaches the solvers with λ ----------------------------------

HOST = {"euler": ("euler", {}), "heun": ("heun", {}), "dpmpp_2m": ("dpmpp_2m", {}),
        "dpmpp_2s": ("dpmpp_2s_ancestral", {"eta": 0.0}), "dpmpp_3m": ("dpmpp_3m_sde", {"eta": 0.0}),
        "ipndm": ("ipndm", {}), "deis": ("deis", {})}


@pytest.mark.parametrize("flow", [False, True])
def test_every_dode_name_without_lambdas_is_the_hosts_stock_sampler(clean, flow):
    from dode import SAMPLER_NAMES
    model = make_model(clean, flow=flow)
    sigmas = clean.v3.compute_sigmas(model, "euler", "simple" if flow else "karras", 6, 1.0)
    assert sorted(HOST) == sorted(SAMPLER_NAMES)
    for name in SAMPLER_NAMES:
        host, options = HOST[name]
        stock = custom(clean, model, clean.samplers.ksampler(host, options), sigmas)
        by_name = custom(clean, model, clean.samplers.ksampler(f"{name}_dode"), sigmas)
        assert torch.equal(by_name, stock), name
    # the host's DEIS is not the core's in the last bits, so the match above is the host's code, not the core's
    deis_core = custom(clean, model, core_sampler(clean, "deis"), sigmas)
    assert not torch.equal(deis_core, custom(clean, model, clean.samplers.ksampler("deis"), sigmas))
    assert torch.allclose(deis_core, custom(clean, model, clean.samplers.ksampler("deis"), sigmas), atol=1e-3)


@pytest.mark.parametrize("name", ["dpmpp_2s", "dpmpp_3m"])
def test_lambda_runs_pass_comfyui_flow_option(clean, name):
    """On a rectified-flow model the D-ODE DPM++ 2S/3M with λ get ComfyUI's offset first σ (flow=), as the host's
    stock samplers use it; without it they would be another sampler."""
    from dode import LambdaEntry, nfe
    model = make_model(clean, flow=True)
    sigmas = clean.v3.compute_sigmas(model, "euler", "simple", 6, 1.0)
    offset = clean.context.comfy_flow(model.model.model_sampling)
    lambdas = [0.25] * nfe(name, sigmas)
    entry = LambdaEntry(sampler=name, sigmas=sigmas, lambdas=lambdas, model="elsewhere", cfg=3.0)
    node = clean.v3.DODESampler.execute(name, "(λ store lookup)", False,
                                        lambdas=clean.options.LambdaSet((entry,))).args[0]
    with_lambda = custom(clean, model, node, sigmas)
    assert torch.equal(with_lambda, custom(clean, model, core_sampler(clean, name, lambdas, flow=offset), sigmas))
    assert not torch.allclose(with_lambda, custom(clean, model, core_sampler(clean, name, lambdas), sigmas),
                              atol=1e-4)


# --- the dode scheduler ----------------------------------------------------------------------------------------------

def test_dode_scheduler_registration_in_place_and_idempotent(cx):
    cs = cx.samplers
    assert cs.KSampler.SCHEDULERS is cs.SCHEDULER_NAMES and cs.SCHEDULER_NAMES.count("dode") == 1
    assert cs.SCHEDULER_HANDLERS["dode"].handler is cx.schedule.dode_scheduler
    assert cs.SCHEDULER_HANDLERS["dode"].use_ms
    before = (list(cs.SCHEDULER_NAMES), dict(cs.SCHEDULER_HANDLERS))
    assert cx.schedule.register_scheduler() == "dode"
    cx.nodes.setup()
    assert (list(cs.SCHEDULER_NAMES), dict(cs.SCHEDULER_HANDLERS)) == before
    assert cx.nodes.REGISTERED_SCHEDULERS == ["dode"]
    ours = cs.SCHEDULER_HANDLERS["dode"]
    cs.SCHEDULER_HANDLERS["dode"] = cs.SchedulerHandler(lambda ms, steps: None)  # another pack's "dode"
    try:
        assert cx.schedule.register_scheduler() is None
    finally:
        cs.SCHEDULER_HANDLERS["dode"] = ours


def fitted_entry(cx, model, sampler="euler", steps=6, cfg=3.0, lam=0.3):
    """A fitted-schedule entry for ``model`` (as Distill λ with fit_schedule writes), its grid inside the model's."""
    from dode import LambdaEntry, nfe
    stock = cx.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).double()
    grid = stock.clone()
    grid[1:-1] = stock[1:-1] * 0.8  # another interior: a grid no stock scheduler gives
    key = cx.context.model_identity(model).key
    return LambdaEntry(sampler=sampler, sigmas=grid, lambdas=[lam] * nfe(sampler, grid), model=key, cfg=cfg,
                       schedule="fitted", objective="final")


def basic_scheduler(model, steps):
    """What BasicScheduler does: the model it was given, the scheduler by name."""
    import comfy.samplers
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "dode", steps)


def test_dode_scheduler_without_a_fit_is_simple_bit_for_bit_and_says_so_once(clean):
    model = make_model(clean)
    for sampler in ("euler_dode", "euler"):
        for _ in range(2):
            assert torch.equal(ksample(clean, model, sampler, scheduler="dode"),
                               ksample(clean, model, sampler, scheduler="simple"))
    misses = told(clean, "dode scheduler: no fitted schedule for model, euler_dode, 6 steps, cfg 3")
    assert len(misses) == 1 and "using the stock 'simple' scheduler" in misses[0]


def test_dode_scheduler_serves_the_fitted_grid_and_its_lambda(clean):
    model = make_model(clean)
    entry = fitted_entry(clean, model)
    clean.store.store().add(clean.lambda_dir / "fits.safetensors", entry)
    grid = entry.sigmas.float()
    with_lambda = custom(clean, model, clean.v3.DODESampler.execute(
        "euler", "(λ store lookup)", True, lambdas=clean.options.LambdaSet((entry,))).args[0], grid)
    # a *_dode sampler: the fitted grid and its λ
    assert torch.equal(ksample(clean, model, "euler_dode", scheduler="dode"), with_lambda)
    assert told(clean, "dode scheduler: fitted σ grid from fits.safetensors (euler, 6 steps, cfg 3)")
    assert told(clean, "euler_dode: λ from fits.safetensors (fitted schedule)")
    # a plain sampler: the fitted grid alone
    assert torch.equal(ksample(clean, model, "euler", scheduler="dode"),
                       custom(clean, model, clean.samplers.ksampler("euler"), grid))
    assert not torch.equal(ksample(clean, model, "euler", scheduler="dode"),
                           ksample(clean, model, "euler", scheduler="simple"))
    # another cfg: the stock grid, and the nearest entry says what differs
    assert torch.equal(ksample(clean, model, "euler", scheduler="dode", cfg=4.0),
                       ksample(clean, model, "euler", scheduler="simple", cfg=4.0))
    (miss,) = told(clean, "no fitted schedule for model, euler, 6 steps, cfg 4")
    assert "which differs in cfg 3, not 4" in miss
    # BasicScheduler knows the model only: the fitted grid for it, whatever the sampler and cfg
    assert torch.equal(basic_scheduler(model, 6), grid)
    assert torch.equal(basic_scheduler(model, 5), clean.samplers.calculate_sigmas(
        model.get_model_object("model_sampling"), "simple", 5))
    assert torch.equal(basic_scheduler(make_model(clean, seed=4), 6), clean.samplers.calculate_sigmas(
        model.get_model_object("model_sampling"), "simple", 6))  # another model: no fit


def test_distill_fit_schedule_outputs_sigmas_and_a_model_the_dode_scheduler_serves(clean):
    model = make_model(clean)
    sampler, lambdas, _, report, _, sigmas, fitted_model = distill(clean, model, objective="final",
                                                                   fit_schedule=True, scale=4, outputs=7)
    (entry,) = lambdas.entries
    assert entry.schedule == "fitted" and entry.objective == "final" and torch.equal(sigmas, entry.sigmas.float())
    stock = clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0)
    assert sigmas[0] == stock[0] and sigmas[-1] == 0 and not torch.allclose(sigmas, stock)
    assert "σ: " in report and "fitted schedule" in report
    (saved,) = clean.lambda_dir.glob("*.safetensors")
    from dode import load_lambdas
    assert load_lambdas(saved)[0].schedule == "fitted"
    expected = custom(clean, model, sampler, sigmas, seed=5)
    # KSampler fed by the MODEL output, on the dode scheduler (karras was the start; the dode scheduler's first σ is
    # simple's, the same σ_max)
    assert torch.equal(ksample(clean, fitted_model, "euler_dode", seed=5, scheduler="dode"), expected)
    assert told(clean, "euler_dode: λ from Distill λ (euler, 6 steps) (fitted schedule)")
    # and the model from the checkpoint finds the same fit in the store
    assert torch.equal(ksample(clean, model, "euler_dode", seed=5, scheduler="dode"), expected)


def test_model_output_carries_the_fit_and_keeps_the_model_options(clean):
    model = make_model(clean)
    strict = with_options(clean, model, on_missing="error")
    sampler, lambdas, *_, fitted_model = distill(clean, strict, save=False, outputs=7)
    options = fitted_model.model_options["dode"]
    assert options.on_missing == "error" and options.lambdas is lambdas and "dode" in strict.model_options
    assert strict.model_options["dode"].lambdas is None  # a clone: the input model is unchanged
    sigmas6 = clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0)
    assert torch.equal(ksample(clean, fitted_model, "euler_dode"), custom(clean, model, sampler, sigmas6))
    with pytest.raises(RuntimeError, match="no λ for"):  # the store has nothing (save off), and on_missing is kept
        ksample(clean, fitted_model, "euler_dode", steps=5)


# --- feedback in the browser, skipped files, nearest entries, names ------------------------------------------------

def test_runs_tell_the_browser_what_they_did(clean):
    model = make_model(clean)
    clean.ui.client_id = "tab-1"
    ksample(clean, model, "euler_dode")
    ((event, data, sid),) = clean.ui.messages
    assert (event, sid, data["level"]) == ("dode.status", "tab-1", "info")
    assert data["text"].startswith("euler_dode: stock euler (λ = 0): no λ for euler, 6 steps, σ 14.61→0, cfg 3")
    out = clean.v3.DistillLambdas.execute(model, cond(0.5), cond(-0.5), latent(2), 1, 3.0, "euler", "karras", 6, 1.0,
                                          "heun", 3, True, objective="greedy")
    assert out.ui == {"text": [out.args[3]]} and out.args[3].startswith("D-ODE euler: euler, 6 steps")
    assert told(clean, "Distill λ: euler, 6 steps") and told(clean, "saved to model-")
    ksample(clean, model, "euler_dode")
    assert told(clean, "euler_dode: λ from model-")


def test_skipped_files_and_the_nearest_entry_are_named(clean):
    model = make_model(clean)
    distill(clean, model)
    (clean.lambda_dir / "broken.safetensors").write_bytes(b"\x00" * 20)
    for _ in range(2):
        assert torch.equal(ksample(clean, model, "euler_dode", cfg=4.0), ksample(clean, model, "euler", cfg=4.0))
    assert len(told(clean, "skipped the λ file broken.safetensors")) == 1  # once per file and reason
    miss = told(clean, "euler_dode: stock euler (λ = 0): no λ for euler, 6 steps, σ 14.61→0, cfg 4")[0]
    assert "nearest entry: euler, 6 steps" in miss and "which differs in cfg 3, not 4" in miss
    assert "skipped unreadable λ files: broken.safetensors (" in miss


def test_lambda_files_are_named_after_the_loaded_model_file(clean):
    """v0.3.x records no file in the MODEL: the running prompt's UNETLoader / checkpoint loader names it."""
    prompt = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd3/my_unet.safetensors"}},
              "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "x.safetensors"}},
              "5": {"class_type": "DODEDistillLambdas", "inputs": {"model": ["2", 0]}}}
    clean.ui.prompt_queue.currently_running = {0: (0, "p1", prompt, {}, ["5"])}
    clean.ui.last_node_id = "5"
    assert clean.context.loader_file_name() == "my_unet"
    assert clean.context.loader_file_name(prompt, "1") == "my_unet"
    assert clean.context.loader_file_name({"5": {"inputs": {"model": ["9", 0]}}}, "5") is None
    assert clean.context.loader_file_name(prompt, None) == "my_unet"  # node unknown: the prompt's only loader
    two = {**prompt, "7": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other.safetensors"}}}
    assert clean.context.loader_file_name(two, None) is None  # which one? not a guess
    distill(clean, make_model(clean))
    (path,) = clean.lambda_dir.glob("*.safetensors")
    assert path.name.startswith("my_unet-") and path.name.endswith("-euler.safetensors")
    from dode import load_lambdas
    assert load_lambdas(path)[0].metrics["model_name"] == "my_unet"


def test_auto_distill_that_cannot_save_keeps_the_fit(clean):
    """A broken file where the fit is to be saved: the paid-for fit is used, kept in memory and not redone."""
    model = make_model(clean)
    auto = with_options(clean, model, on_missing="auto_distill")
    target = clean.store.default_file(clean.context.model_identity(model), "euler")
    with open(target, "wb") as f:
        f.write(b"garbage, not a lambda file")
    first = ksample(clean, auto, "euler_dode", batch=2)
    assert not torch.equal(first, ksample(clean, model, "euler", batch=2))
    (warning,) = told(clean, "λ fitted but not saved")
    assert "keeps it in memory" in warning
    second = ksample(clean, auto, "euler_dode", batch=2)
    assert torch.equal(first, second) and len(told(clean, "auto-distilling")) == 1
    assert told(clean, "euler_dode: λ from an unsaved fit of this process")

    # Distill λ likewise: its outputs carry the fit, the store lookups of this process find it
    steps4 = clean.store.default_file(clean.context.model_identity(model), "heun")
    with open(steps4, "wb") as f:
        f.write(b"garbage")
    sampler, lambdas, _, report, *_ = distill(clean, model, sampler="heun", steps=4)
    assert "not saved (LambdaFileError" in report and told(clean, "Distill λ: λ fitted but not saved")
    sigmas4 = clean.v3.compute_sigmas(model, "heun", "karras", 4, 1.0)
    assert torch.equal(ksample(clean, model, "heun_dode", steps=4), custom(clean, model, sampler, sigmas4))


def test_dual_cfg_guider_is_refused_clearly(clean):
    """λ is keyed by one CFG scale; Guider_DualCFG has two (its .cfg stays 1), so no λ is looked up or fitted."""
    model = make_model(clean)
    _, lambdas, *_ = distill(clean, model)

    class DualGuider(clean.samplers.CFGGuider):
        cfg1, cfg2 = 3.0, 2.0

    def run(sampler):
        guider = DualGuider(model)
        guider.set_conds(cond(0.5), cond(-0.5))
        guider.set_cfg(1.0)
        lat = latent(1)["samples"]
        return guider.sample(clean.sample.prepare_noise(lat, 1), lat, sampler,
                             clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0))

    assert torch.equal(run(clean.samplers.ksampler("euler_dode")), run(clean.samplers.ksampler("euler")))
    assert told(clean, "DualGuider has two CFG scales (cfg1 3, cfg2 2)")
    with pytest.raises(RuntimeError, match="two CFG scales"):
        run(clean.v3.DODESampler.execute("euler", "(λ store lookup)", True, lambdas=lambdas).args[0])


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


def test_final_objective_distill_fills_one_progress_bar(clean):
    """The final fit reports its teacher steps, then its budget of network rows; the bar ends full even when the fit
    converges before the budget."""
    seen = []
    clean.utils.PROGRESS_BAR_HOOK = lambda value, total, preview, node_id=None: seen.append((value, total))
    distill(clean, make_model(clean), steps=4, scale=3, save=False, objective="final")
    assert len({t for _, t in seen}) == 1 and seen[-1][0] == seen[-1][1]
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)
