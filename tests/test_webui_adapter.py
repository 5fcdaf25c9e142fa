"""The WebUI adapter (scripts/dode_webui.py + webui/) against a stub of the WebUI's modules (tests/webui_stub).

The script is loaded the way A1111 loads extension scripts (a standalone module from its file path), so these tests
also cover the private-package import of the core."""
import hashlib
import importlib.util
import inspect
import logging
import os
import subprocess
import sys
from copy import copy
from types import SimpleNamespace

import pytest
import torch

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUB = os.path.join(ROOT, "tests", "webui_stub")
SCRIPT = os.path.join(ROOT, "scripts", "dode_webui.py")
PKG = "_dode_webui_ext"
EXPECTED = {"Euler (D-ODE)": "euler", "Heun (D-ODE)": "heun", "DPM++ 2M (D-ODE)": "dpmpp_2m"}


def purge(*prefixes):
    for name in [m for m in sys.modules if m.split(".")[0] in prefixes]:
        del sys.modules[name]


def load_script():
    spec = importlib.util.spec_from_file_location("dode_webui.py", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def webui(tmp_path, monkeypatch):
    """A fresh stub WebUI with the extension loaded; models/ in tmp_path."""
    purge("modules", PKG)
    monkeypatch.syspath_prepend(STUB)
    from modules import paths, script_callbacks, sd_samplers, shared
    monkeypatch.setattr(paths, "models_path", str(tmp_path / "models"))
    script = load_script()
    script_callbacks.ui_settings_callback()
    ckpt = tmp_path / "models" / "Stable-diffusion" / "toy.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not really a checkpoint" * 100)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    info = SimpleNamespace(filename=str(ckpt), sha256=sha, shorthash=sha[:10], title=f"toy.safetensors [{sha[:10]}]")
    shared.sd_model = SimpleNamespace(sd_checkpoint_info=info, sd_model_hash=sha[:10])
    yield SimpleNamespace(script=script, adapter=sys.modules[PKG + ".webui.adapter"], sd_samplers=sd_samplers, shared=shared,
                          callbacks=script_callbacks, info=info, ckpt=ckpt, ident=sha[:10], tmp=tmp_path,
                          core=sys.modules[PKG + ".samplers"], lambdas=sys.modules[PKG + ".lambdas"])
    purge("modules", PKG)


class Gaussian:
    """An exact CFG denoiser for Gaussian data (cond/uncond means differ), with the WebUI denoiser's p/step."""

    def __init__(self, p=None, sigma_max=14.6146, interrupt_at=None):
        self.p, self.step, self.calls, self.interrupt_at = p, 0, 0, interrupt_at
        self.inner_model = SimpleNamespace(sigmas=torch.linspace(0.0292, sigma_max, 1000))
        g = torch.Generator().manual_seed(0)
        self.std = 0.5 + torch.rand(1, 4, 4, 4, generator=g)
        self.mu_c, self.mu_u = torch.randn(1, 4, 4, 4, generator=g), torch.randn(1, 4, 4, 4, generator=g)

    def x0(self, x, sigma, mu):
        s2 = sigma.view(-1, 1, 1, 1) ** 2
        return mu + (x - mu) * self.std ** 2 / (self.std ** 2 + s2)

    def __call__(self, x, sigma, cond=None, uncond=None, cond_scale=1.0, **kwargs):
        self.calls += 1
        if self.interrupt_at is not None and self.calls >= self.interrupt_at:
            from modules.sd_samplers_common import InterruptedException
            raise InterruptedException
        self.step += 1
        d_u = self.x0(x, sigma, self.mu_u)
        return d_u + cond_scale * (self.x0(x, sigma, self.mu_c) - d_u)


def karras(n, sigma_min=0.0292, sigma_max=14.6146, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros([1])])


def make_p(**kw):
    return SimpleNamespace(**{"extra_generation_params": {}, "is_hr_pass": False, "cfg_scale": 7.0,
                              "scheduler": "Automatic", **kw})


def args(cfg=7.0):
    return {"cond": None, "uncond": None, "cond_scale": cfg, "image_cond": None, "s_min_uncond": 0.0}


def run(w, label, p, sigmas, seed=1, **model_kw):
    model = Gaussian(p, **model_kw)
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(seed)) * sigmas[0]
    fn = w.sd_samplers.create_sampler(label, None).func
    return fn(model, x, sigmas, extra_args=args(p.cfg_scale), disable=True), model, x


def generate(w, label, p, steps, seed=1):
    """What the WebUI does for one txt2img pass: create the sampler, run the scripts' process_before_every_sampling,
    build the σ grid with the sampler's get_sigmas (the schedule type), then sample (stock samplers: no sampling)."""
    p.sampler = w.sd_samplers.create_sampler(label, None)
    w.script.DodeSchedule().process_before_every_sampling(p, x=None, noise=None, c=None, uc=None)
    sigmas = p.sampler.get_sigmas(p, steps)
    if p.sampler.func is None:
        return None, sigmas, None
    model = Gaussian(p)
    x = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(seed)) * sigmas[0]
    return p.sampler.func(model, x, sigmas, extra_args=args(p.cfg_scale), disable=True), sigmas, x


def stub_karras(steps):
    """The stub WebUI's own "Karras" grid for its SD1.5-like σ range."""
    return karras(steps, sigma_min=torch.tensor(0.0292).item(), sigma_max=torch.tensor(14.6146).item())


def save_fitted(w, path, sampler, sigmas, model, cfg=7.0, value=0.2):
    n = w.core.nfe(sampler, sigmas)
    entry = w.lambdas.LambdaEntry(sampler=sampler, sigmas=sigmas, lambdas=torch.full([n], value), model=model, cfg=cfg,
                                  schedule="fitted", objective="final")
    w.lambdas.save_lambdas(path, [entry])
    return entry


def save_entry(w, path, sampler, sigmas, model, cfg=7.0, value=0.1):
    n = w.core.nfe(sampler, sigmas)
    entry = w.lambdas.LambdaEntry(sampler=sampler, sigmas=sigmas, lambdas=torch.full([n], value), model=model, cfg=cfg)
    w.lambdas.save_lambdas(path, [entry])
    return entry


# ---------------------------------------------------------------- registration

def test_registers_every_core_sampler(webui):
    sd = webui.sd_samplers
    names = webui.core.SAMPLER_NAMES
    labels = webui.adapter.labels()
    assert set(EXPECTED) <= set(labels) and len(labels) == len(names) and set(labels.values()) == set(names)
    for label, name in labels.items():
        data = sd.all_samplers_map[label]
        assert data in sd.all_samplers and data in sd.samplers
        assert sd.samplers_map[label.lower()] == label and sd.samplers_map[f"dode_{name}"] == label
        assert label in sd.visible_sampler_names()
        sampler = sd.create_sampler(label, None)
        params = inspect.signature(sampler.func).parameters
        assert "sigmas" in params and not {"eta", "n", "sigma_min", "sigma_max"} & set(params)
    assert sd.all_samplers_map["Heun (D-ODE)"].options.get("second_order") is True
    assert not sd.all_samplers_map["Euler (D-ODE)"].options.get("second_order")
    assert sd.all_samplers_map["DPM++ 2M (D-ODE)"].options.get("scheduler") == "karras"


def test_labels_are_never_split_into_a_schedule_type(webui):
    sd = webui.sd_samplers
    for label in webui.adapter.labels():
        for scheduler in ("Automatic", "Karras", "DDIM", "Normal"):
            assert sd.get_sampler_and_scheduler(label, scheduler)[0] == label
        for suffix in webui.adapter.scheduler_suffixes():
            assert not label.endswith(" " + suffix)


def test_a_label_ending_in_a_schedule_type_is_refused(webui, monkeypatch, caplog):
    sd = webui.sd_samplers
    assert sd.get_sampler_and_scheduler("Probe DDIM", "Automatic") == ("DPM++ 2M", "DDIM")  # the trap
    monkeypatch.setattr(webui.adapter, "LABEL_SUFFIX", " DDIM")
    with caplog.at_level(logging.ERROR, "dode.webui"):
        assert webui.adapter.register() == []
    assert "Euler DDIM" not in sd.all_samplers_map and "schedule type" in caplog.text


def test_fitted_schedule_type_is_registered(webui):
    from modules import sd_schedulers
    scheduler = sd_schedulers.schedulers_map["D-ODE fitted"]
    assert sd_schedulers.schedulers_map["dode_fitted"] is scheduler and scheduler in sd_schedulers.schedulers
    assert scheduler.need_inner_model and scheduler.function is webui.adapter.fitted_schedule
    # the XYZ plot's "Schedule type" axis offers the labels of sd_schedulers.schedulers and sets p.scheduler, which
    # get_sampler_and_scheduler (run on every generation) keeps only if it knows the label
    assert "D-ODE fitted" in [s.label for s in sd_schedulers.schedulers]
    for sampler in ["Euler", "DPM++ 2M", *webui.adapter.labels()]:
        assert webui.sd_samplers.get_sampler_and_scheduler(sampler, "D-ODE fitted") == (sampler, "D-ODE fitted")
    assert not any(label.endswith(" D-ODE fitted") or label.endswith(" dode_fitted") for label in
                   webui.sd_samplers.all_samplers_map)
    cached = webui.sd_samplers.get_sampler_and_scheduler("Euler", "Karras")
    assert webui.adapter.register_scheduler() is False  # Reload UI: nothing twice
    assert [s.label for s in sd_schedulers.schedulers].count("D-ODE fitted") == 1
    assert webui.sd_samplers.get_sampler_and_scheduler("Euler", "Karras") == cached


def test_reload_ui_registers_nothing_twice(webui):
    sd, cb = webui.sd_samplers, webui.callbacks
    before = len(sd.all_samplers)
    cb.clear_callbacks()  # what Reload UI does before re-importing the scripts
    script = load_script()
    assert script.registered == [] and len(sd.all_samplers) == before
    assert len([s for s in sd.all_samplers if s.name == "Euler (D-ODE)"]) == 1
    assert cb.callbacks_ui_settings == [webui.adapter.on_ui_settings]
    assert script.adapter is webui.script.adapter  # the core is not reloaded, so registered closures stay valid


def test_forge_add_sampler_is_used(webui, monkeypatch):
    sd = webui.sd_samplers
    calls = []

    def add_sampler(data):  # Forge rebinds the map instead of mutating it
        calls.append(data.name)
        sd.all_samplers.append(data)
        sd.all_samplers_map = {x.name: x for x in sd.all_samplers}
        sd.set_samplers()
    for label in list(webui.adapter.labels()):
        sd.all_samplers.remove(sd.all_samplers_map.pop(label))
    sd.set_samplers()
    assert sd.get_sampler_and_scheduler("Euler (D-ODE)", "Automatic")[0] == "DPM++ 2M"  # unknown: cached fallback
    monkeypatch.setattr(sd, "add_sampler", add_sampler, raising=False)
    assert webui.adapter.register() == calls == list(webui.adapter.labels())
    assert webui.adapter.register() == []
    assert sd.get_sampler_and_scheduler("Euler (D-ODE)", "Automatic")[0] == "Euler (D-ODE)"  # the cache was cleared
    assert sd.samplers_map["dode_heun"] == "Heun (D-ODE)"
    sigmas = karras(5)
    out, _, x = run(webui, "Heun (D-ODE)", make_p(), sigmas)
    assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler="heun", extra_args=args(), disable=True))


def test_settings_section(webui):
    labels = webui.shared.opts.data_labels
    fit = sys.modules[PKG + ".lambdas.fit"]
    assert set(webui.adapter.OPTION_DEFAULTS) <= set(labels)
    assert all(labels[key].section == ("dode", "D-ODE") for key in webui.adapter.OPTION_DEFAULTS)
    # the defaults are the core's, and each choice list is what the adapter accepts
    assert (labels["dode_teacher"].default, labels["dode_scale"].default, labels["dode_objective"].default) == \
        (fit.DEFAULT_TEACHER, fit.DEFAULT_SCALE, fit.DEFAULT_OBJECTIVE)
    assert labels["dode_auto_distill"].default is False and labels["dode_distill_tails"].default is False
    assert labels["dode_objective"].component_args["choices"] == list(fit.OBJECTIVES)
    assert labels["dode_teacher"].component_args["choices"] == list(webui.core.SAMPLER_NAMES)
    assert labels["dode_miss_policy"].component_args["choices"] == list(webui.adapter.MISS_POLICIES)
    assert labels["dode_miss_policy"].default == "stock sampler, log once"


def test_fit_settings_reach_the_fit(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_teacher, webui.shared.opts.dode_scale = "heun", 3
    webui.shared.opts.dode_objective = "greedy"
    p = make_p()
    run(webui, "Euler (D-ODE)", p, karras(5))
    path = webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"
    (entry,) = webui.lambdas.load_lambdas(path)
    assert (entry.teacher, entry.scale, entry.objective, entry.schedule) == ("heun", 3, "greedy", "given")
    assert p.extra_generation_params["D-ODE fit"].startswith("greedy, heun x3, rmse ")
    webui.shared.opts.dode_objective = "final"
    run(webui, "Euler (D-ODE)", make_p(), karras(6))
    assert [e.objective for e in webui.lambdas.load_lambdas(path)] == ["greedy", "final"]
    webui.shared.opts.dode_objective = "no such objective"  # a hand-edited config: the default, said once
    run(webui, "Euler (D-ODE)", make_p(), karras(7))
    assert webui.lambdas.load_lambdas(path)[-1].objective == sys.modules[PKG + ".lambdas.fit"].DEFAULT_OBJECTIVE


def test_install_py_installs_only_what_is_missing():
    spec = importlib.util.spec_from_file_location("dode_install_probe", os.path.join(ROOT, "install.py"))
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)  # no WebUI `launch` module here: nothing happens
    assert install.launch is None and install.main() == []
    assert install.missing(is_installed=lambda m: m != "tqdm") == ["tqdm"]
    assert not any("torch" in r for r in install.REQUIREMENTS.values())
    out = subprocess.run([sys.executable, os.path.join(ROOT, "install.py")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == ""


# ---------------------------------------------------------------- λ lookup

def test_miss_runs_the_stock_sampler_and_logs_once(webui, caplog):
    sigmas = karras(8)
    for label, name in EXPECTED.items():
        p = make_p()
        with caplog.at_level(logging.WARNING, "dode.webui"):
            out, _, x = run(webui, label, p, sigmas)
            run(webui, label, make_p(), sigmas)
        ref = webui.core.sample(Gaussian(), x, sigmas, sampler=name, extra_args=args(), disable=True)
        assert torch.equal(out, ref)
        assert p.extra_generation_params["D-ODE λ"] == "none"
        assert caplog.text.count(f"D-ODE: {label} (full schedule), using the stock sampler: no λ for {name}") == 1


def test_lambda_from_models_dir_is_used_with_infotext(webui):
    sigmas = karras(8)
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "other.safetensors", "euler", sigmas, model="0000000000")  # another checkpoint
    entry = save_entry(webui, folder / "mine.safetensors", "euler", sigmas, model=webui.ident)
    p = make_p()
    out, model, x = run(webui, "Euler (D-ODE)", p, sigmas)
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    stock = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True)
    assert torch.equal(out, ref) and not torch.equal(out, stock)
    assert p.extra_generation_params["D-ODE λ"] == "mine.safetensors#0"
    assert model.calls == len(sigmas) - 1


def test_lookup_needs_the_exact_grid_cfg_and_sampler(webui):
    sigmas = karras(8)
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "a.safetensors", "euler", karras(8, sigma_min=0.03), model=webui.ident)
    save_entry(webui, folder / "b.safetensors", "euler", sigmas, model=webui.ident, cfg=5.0)
    save_entry(webui, folder / "c.safetensors", "heun", sigmas, model=webui.ident)
    p = make_p()
    run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "none"


def test_sidecar_next_to_the_checkpoint(webui):
    sigmas = karras(6)
    side = webui.ckpt.with_name("toy.dode.safetensors")
    entry = save_entry(webui, side, "dpmpp_2m", sigmas, model="comfyui-fingerprint", value=0.2)
    p = make_p()
    out, _, x = run(webui, "DPM++ 2M (D-ODE)", p, sigmas)
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler="dpmpp_2m", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    assert torch.equal(out, ref) and p.extra_generation_params["D-ODE λ"] == "toy.dode.safetensors#0"


def test_bad_lambda_file_does_not_break_sampling(webui, caplog):
    folder = webui.tmp / "models" / "D-ODE"
    folder.mkdir(parents=True)
    (folder / "broken.safetensors").write_bytes(b"garbage")
    webui.ckpt.with_name("toy.dode.safetensors").write_bytes(b"garbage")
    sigmas = karras(5)
    p = make_p()
    with caplog.at_level(logging.WARNING, "dode.webui"):
        out, _, x = run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "none"
    assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True))
    assert "broken.safetensors" in caplog.text and "toy.dode.safetensors" in caplog.text  # each skipped file named


def test_no_hashing_hashes_the_file_once(webui, monkeypatch):
    webui.info.sha256 = webui.info.shorthash = None
    webui.shared.cmd_opts.no_hashing = True
    sigmas = karras(5)
    save_entry(webui, webui.tmp / "models" / "D-ODE" / "x.safetensors", "euler", sigmas, model=webui.ident)
    p = make_p()
    run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "x.safetensors#0"
    assert (webui.tmp / "models" / "D-ODE" / "sha256-cache.json").is_file()
    store = sys.modules[PKG + ".lambdas.identity"]
    store._hash_memo.clear()  # a restart: the disk cache answers, the file is not read again
    monkeypatch.setattr(store, "hashlib", None)
    assert webui.adapter.checkpoint(p)[0] == webui.ident


# ---------------------------------------------------------------- auto-distill, tails, policies

def test_auto_distill_on_first_use_then_reuse(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 4
    sigmas = karras(6)
    p1 = make_p()
    out1, model1, x = run(webui, "Euler (D-ODE)", p1, sigmas)
    path = webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"
    assert path.is_file()
    assert p1.extra_generation_params["D-ODE λ"] == f"{path.name}#0"
    teacher_name = webui.lambdas.DEFAULT_TEACHER
    objective = sys.modules[PKG + ".lambdas.fit"].DEFAULT_OBJECTIVE
    assert p1.extra_generation_params["D-ODE fit"].startswith(f"{objective}, {teacher_name} x4, rmse")
    assert "D-ODE schedule" not in p1.extra_generation_params  # a Karras grid chosen by the user is kept
    assert model1.calls > 2 * (len(sigmas) - 1) and model1.step == len(sigmas) - 1  # teacher calls don't count
    (entry,) = webui.lambdas.load_lambdas(path)
    assert entry.model == webui.ident and entry.cfg == 7.0 and entry.teacher == teacher_name and entry.scale == 4
    assert entry.objective == objective and entry.schedule == "given" and torch.equal(entry.sigmas, sigmas.double())
    p2 = make_p()
    out2, model2, _ = run(webui, "Euler (D-ODE)", p2, sigmas)
    assert model2.calls == len(sigmas) - 1 and "D-ODE fit" not in p2.extra_generation_params
    assert p2.extra_generation_params["D-ODE λ"] == f"{path.name}#0"
    torch.testing.assert_close(out2, out1, rtol=0, atol=1e-5)
    teacher = webui.core.sample(Gaussian(), x, webui.lambdas.teacher_grid(sigmas, sigmas[1:], 4), sampler=teacher_name,
                                extra_args=args(), disable=True)
    stock = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True)
    assert (out1 - teacher).norm() < (stock - teacher).norm()
    p3 = make_p(cfg_scale=5.0)  # another CFG scale is another combination: a second entry in the same file
    run(webui, "Euler (D-ODE)", p3, sigmas)
    assert p3.extra_generation_params["D-ODE λ"] == f"{path.name}#1"


def test_a_fit_that_cannot_be_saved_still_serves_its_image(webui, caplog):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    path = webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"damaged")  # the file auto-distill would add to
    sigmas = karras(5)
    p = make_p()
    with caplog.at_level(logging.ERROR, "dode.webui"):
        out, _, x = run(webui, "Euler (D-ODE)", p, sigmas)
    fit = webui.lambdas.distill(Gaussian(), x, sigmas, sampler="euler", scale=2, extra_args=args(), disable=True)
    assert torch.equal(out, fit.samples) and path.read_bytes() == b"damaged"
    assert p.extra_generation_params["D-ODE λ"] == "not saved" and "D-ODE fit" in p.extra_generation_params
    assert "λ fitted but not saved" in caplog.text and path.name in caplog.text


def test_interrupted_distill_writes_nothing(webui):
    webui.shared.opts.dode_auto_distill = True
    from modules.sd_samplers_common import InterruptedException
    p = make_p()
    with pytest.raises(InterruptedException):
        run(webui, "Euler (D-ODE)", p, karras(6), interrupt_at=5)
    assert not (webui.tmp / "models" / "D-ODE").exists() or not list((webui.tmp / "models" / "D-ODE").glob("*.dode*"))


def test_tails_use_only_an_exact_tail_entry(webui):
    webui.shared.opts.dode_auto_distill = True
    full = karras(10)
    tail = full[4:]  # img2img with denoise ~0.6: the last steps of the 10-step schedule
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "full.safetensors", "euler", full, model=webui.ident)
    p = make_p(init_images=["image"])
    out, model, x = run(webui, "Euler (D-ODE)", p, tail)
    stock = webui.core.sample(Gaussian(), x, tail, sampler="euler", extra_args=args(), disable=True)
    assert torch.equal(out, stock) and p.extra_generation_params["D-ODE λ"] == "none"
    assert model.calls == len(tail) - 1 and not list(folder.glob("*.dode.safetensors"))  # no distill on a tail
    entry = save_entry(webui, folder / "tail.safetensors", "euler", tail, model=webui.ident, value=0.3)
    p = make_p(init_images=["image"])
    out, _, x = run(webui, "Euler (D-ODE)", p, tail)
    ref = webui.core.sample(Gaussian(), x, tail, sampler="euler", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    assert torch.equal(out, ref) and p.extra_generation_params["D-ODE λ"] == "tail.safetensors#0"


def test_hires_pass_has_its_own_infotext_and_can_distill_tails_when_asked(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_distill_tails = True
    webui.shared.opts.dode_scale = 2
    tail = karras(12)[6:]
    p = make_p(init_images=None)
    p.extra_generation_params["D-ODE λ"] = "first-pass.safetensors#0"
    p.is_hr_pass = True
    run(webui, "Euler (D-ODE)", p, tail)
    assert p.extra_generation_params["D-ODE λ"] == "first-pass.safetensors#0"
    assert p.extra_generation_params["Hires D-ODE λ"].endswith(".dode.safetensors#0")
    assert "Hires D-ODE fit" in p.extra_generation_params


def test_error_policy_raises_for_full_schedules_only(webui):
    webui.shared.opts.dode_miss_policy = "error"
    with pytest.raises(RuntimeError, match=r"Euler \(D-ODE\) \(full schedule\): no λ for euler"):
        run(webui, "Euler (D-ODE)", make_p(), karras(6))
    p = make_p(init_images=["image"])
    run(webui, "Euler (D-ODE)", p, karras(10)[5:])
    assert p.extra_generation_params["D-ODE λ"] == "none"


def test_refiner_runs_stock(webui):
    sigmas = karras(6)
    save_entry(webui, webui.tmp / "models" / "D-ODE" / "x.safetensors", "euler", sigmas, model=webui.ident)
    p = make_p(refiner_checkpoint_info=object(), refiner_switch_at=0.8)
    out, _, x = run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "none"
    assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True))
    p = make_p(refiner_checkpoint_info=object(), refiner_switch_at=1.0)  # a refiner that never switches: λ applies
    run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "x.safetensors#0"


def test_unusable_grid_for_distill_falls_back_to_stock(webui, caplog):
    webui.shared.opts.dode_auto_distill = True
    sigmas = torch.tensor([14.6, 0.0])  # one step: nothing to fit
    p = make_p()
    with caplog.at_level(logging.WARNING, "dode.webui"):
        out, model, x = run(webui, "Euler (D-ODE)", p, sigmas)
    stock = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", extra_args=args(), disable=True)
    assert torch.equal(out, stock) and not torch.equal(out, x)
    assert p.extra_generation_params["D-ODE λ"] == "none" and "D-ODE fit" not in p.extra_generation_params
    assert "auto-distill failed" in caplog.text and model.calls == 1


def test_flow_models_pass_flow_to_the_core(webui):
    labels = {name: label for label, name in webui.adapter.labels().items()}
    name = next(n for n in ("dpmpp_3m", "dpmpp_2s") if n in labels)
    sigmas = torch.tensor(torch.linspace(1.0, 0.02, 7).tolist() + [0.0])
    p = make_p()
    out, model, x = run(webui, labels[name], p, sigmas, sigma_max=1.0)  # a Flux/SD3-like model: σ in (0, 1]
    assert webui.adapter.is_flow(model)
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler=name, extra_args=args(), disable=True, flow=True)
    assert torch.equal(out, ref)
    assert not torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler=name, extra_args=args(),
                                                  disable=True))
    assert not webui.adapter.is_flow(Gaussian())


def test_flow_models_auto_distill_in_flow_mode(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    webui.shared.opts.dode_objective = "greedy"
    sigmas = torch.tensor(torch.linspace(1.0, 0.02, 5).tolist() + [0.0])
    out, _, x = run(webui, "DPM++ 2S (D-ODE)", make_p(), sigmas, sigma_max=1.0)
    fit = webui.lambdas.distill(Gaussian(sigma_max=1.0), x, sigmas, sampler="dpmpp_2s", teacher=webui.lambdas.DEFAULT_TEACHER,
                                scale=2, extra_args=args(), disable=True, flow=True, objective="greedy",
                                compare_stock=True)
    not_flow = webui.lambdas.distill(Gaussian(sigma_max=1.0), x, sigmas, sampler="dpmpp_2s", scale=2,
                                     extra_args=args(), disable=True, objective="greedy")
    assert torch.equal(out, fit.samples) and not torch.allclose(out, not_flow.samples)
    (entry,) = webui.lambdas.load_lambdas(webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors")
    torch.testing.assert_close(entry.lambdas, fit.lambdas, rtol=0, atol=0)


def test_sidecars_are_not_listed_as_checkpoints(webui):
    from modules import sd_models
    sd_models.models_files[:] = ["/m/toy.safetensors", "/m/toy.dode.safetensors"]
    sd_models.list_models.__wrapped__()  # the list the WebUI built before the script loaded
    assert "toy.dode.safetensors" in sd_models.checkpoints_list
    webui.adapter.hide_sidecars()
    assert list(sd_models.checkpoints_list) == ["toy.safetensors"]
    assert set(sd_models.checkpoint_aliases) == {"toy.safetensors", "toy"}
    sd_models.list_models()  # a refresh
    assert list(sd_models.checkpoints_list) == ["toy.safetensors"]
    load_script()  # Reload UI: wrapped once only
    assert not getattr(sd_models.list_models.__wrapped__, "dode_prunes_sidecars", False)


def test_extra_networks_are_part_of_the_identity(webui):
    sigmas = karras(6)
    lora = {"lora": [SimpleNamespace(items=["detail_slider", "0.8"])]}
    ident_lora, _ = webui.adapter.identity(make_p(extra_network_data=lora))
    assert ident_lora.startswith(webui.ident + "+nets-")
    assert webui.adapter.identity(make_p(extra_network_data={"lora": [SimpleNamespace(items=["detail_slider", "1"])]}))[0] != ident_lora
    folder = webui.tmp / "models" / "D-ODE"
    save_entry(webui, folder / "lora.safetensors", "euler", sigmas, model=ident_lora)
    bare = make_p()
    run(webui, "Euler (D-ODE)", bare, sigmas)
    assert bare.extra_generation_params["D-ODE λ"] == "none"
    with_lora = make_p(extra_network_data=lora)
    run(webui, "Euler (D-ODE)", with_lora, sigmas)
    assert with_lora.extra_generation_params["D-ODE λ"] == "lora.safetensors#0"


def test_sidecar_refuses_fits_made_with_patches_or_extra_networks(webui):
    sigmas = karras(6)
    side = webui.ckpt.with_name("toy.dode.safetensors")
    n = webui.core.nfe("euler", sigmas)
    patched = webui.lambdas.LambdaEntry(sampler="euler", sigmas=sigmas, lambdas=torch.full([n], 0.2), cfg=7.0,
                                        model="fp1-comfy", metrics={"model_patches": "1:abcd"})
    with_nets = webui.lambdas.LambdaEntry(sampler="euler", sigmas=sigmas, lambdas=torch.full([n], 0.3), cfg=7.0,
                                          model="0123456789+nets-abc")
    webui.lambdas.save_lambdas(side, [patched, with_nets])
    p = make_p()
    run(webui, "Euler (D-ODE)", p, sigmas)
    assert p.extra_generation_params["D-ODE λ"] == "none"


# ---------------------------------------------------------------- the schedule type "D-ODE fitted"

def test_fitted_schedule_gives_the_fitted_grid_and_its_lambda(webui):
    fitted = torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0])  # the first σ is the model's σ_max
    other = torch.tensor([14.6146, 5.0, 2.0, 0.5, 0.06, 0.0])
    folder = webui.tmp / "models" / "D-ODE"
    entry = save_fitted(webui, folder / "fit.safetensors", "euler", fitted, model=webui.ident)
    entry5 = save_fitted(webui, folder / "fit5.safetensors", "euler", other, model=webui.ident, cfg=5.0)
    p = make_p(scheduler="D-ODE fitted")
    out, sigmas, x = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, fitted.float())
    ref = webui.core.sample(Gaussian(), x, sigmas, sampler="euler", lambdas=entry.lambdas, extra_args=args(),
                            disable=True)
    assert torch.equal(out, ref)
    info = p.extra_generation_params
    assert info["D-ODE schedule"] == "fitted fit.safetensors#0" and info["D-ODE λ"] == "fit.safetensors#0"
    assert info["Schedule type"] == "D-ODE fitted"
    p = make_p(scheduler="D-ODE fitted", cfg_scale=5.0)  # the CFG scale picks the entry
    generate(webui, "Euler (D-ODE)", p, 5)
    assert p.extra_generation_params["D-ODE schedule"] == "fitted fit5.safetensors#0"
    assert p.extra_generation_params["D-ODE λ"] == "fit5.safetensors#0" and entry5.cfg == 5.0
    p = make_p(scheduler="D-ODE fitted")  # a stock sampler gets the grid alone
    _, sigmas, _ = generate(webui, "Euler", p, 5)
    assert torch.equal(sigmas, fitted.float()) and "D-ODE λ" not in p.extra_generation_params
    assert p.extra_generation_params["D-ODE schedule"] == "fitted fit.safetensors#0"
    p = make_p(scheduler="Automatic", hr_scheduler="D-ODE fitted", is_hr_pass=True)  # the Hires schedule type
    _, sigmas, _ = generate(webui, "Euler", p, 5)
    assert torch.equal(sigmas, fitted.float())
    assert p.extra_generation_params["Hires D-ODE schedule"] == "fitted fit.safetensors#0"


def test_fitted_schedule_in_the_sidecar_follows_the_sidecar_rules(webui):
    fitted = torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0])
    save_fitted(webui, webui.ckpt.with_name("toy.dode.safetensors"), "euler", fitted, model="fp1-comfyui")
    p = make_p(scheduler="D-ODE fitted")
    _, sigmas, _ = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, fitted.float())
    assert p.extra_generation_params["D-ODE schedule"] == "fitted toy.dode.safetensors#0"
    lora = {"lora": [SimpleNamespace(items=["detail_slider", "0.8"])]}
    p = make_p(scheduler="D-ODE fitted", extra_network_data=lora)  # another model: not this bare-checkpoint fit
    _, sigmas, _ = generate(webui, "Euler (D-ODE)", p, 5)
    assert torch.equal(sigmas, stub_karras(5)) and p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"


def test_fitted_schedule_falls_back_to_karras(webui, caplog):
    karras_p = make_p(scheduler="Karras")
    _, stock, _ = generate(webui, "Euler (D-ODE)", karras_p, 5)
    save_fitted(webui, webui.tmp / "models" / "D-ODE" / "fit.safetensors", "euler",
                torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0]), model=webui.ident)
    for label, kw, steps in [("Euler (D-ODE)", {}, 6),  # another step count
                             ("Euler (D-ODE)", {"cfg_scale": 4.5}, 5),  # another CFG scale
                             ("Heun (D-ODE)", {}, 5),  # another sampler
                             ("DPM++ SDE", {}, 5)]:  # a sampler without a D-ODE solver
        p = make_p(scheduler="D-ODE fitted", **kw)
        with caplog.at_level(logging.WARNING, "dode.webui"):
            out, sigmas, x = generate(webui, label, p, steps)
        assert torch.equal(sigmas, stub_karras(steps)), label
        assert p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"
        if out is not None:
            name = webui.adapter.labels()[label]
            assert torch.equal(out, webui.core.sample(Gaussian(), x, sigmas, sampler=name,
                                                      extra_args=args(p.cfg_scale), disable=True))
    assert torch.equal(stock, stub_karras(5))  # the fallback is the WebUI's own Karras grid
    assert "5 steps, not 6" in caplog.text and "cfg 7, not 4.5" in caplog.text
    assert "DPM++ SDE has no D-ODE solver" in caplog.text


def test_fitted_schedule_without_this_generation_recorded_is_karras(webui):
    from modules import sd_schedulers
    save_fitted(webui, webui.tmp / "models" / "D-ODE" / "fit.safetensors", "euler",
                torch.tensor([14.6146, 6.0, 2.2, 0.7, 0.1, 0.0]), model=webui.ident)
    p = make_p(scheduler="D-ODE fitted")
    generate(webui, "Euler (D-ODE)", p, 5)  # recorded: p and its sampler
    other = webui.sd_samplers.create_sampler("Euler (D-ODE)", None)  # a sampler the scripts never saw
    sigmas = sd_schedulers.schedulers_map["D-ODE fitted"].function(n=5, sigma_min=0.0292, sigma_max=14.6146,
                                                                   inner_model=other.model_wrap, device="cpu")
    assert torch.equal(sigmas, karras(5)) and p.extra_generation_params["D-ODE schedule"] == "fitted fit.safetensors#0"


def test_auto_distill_fits_the_schedule_on_d_ode_fitted(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    p1 = make_p(scheduler="D-ODE fitted")
    out1, grid1, x = generate(webui, "Euler (D-ODE)", p1, 5)
    assert torch.equal(grid1, stub_karras(5))  # nothing fitted yet: the fit starts from the Karras grid
    path = webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors"
    (entry,) = webui.lambdas.load_lambdas(path)
    assert (entry.schedule, entry.objective, entry.sampler, entry.cfg) == ("fitted", "final", "euler", 7.0)
    assert entry.steps == 5 and not torch.allclose(entry.sigmas, grid1.double())
    assert entry.sigmas[0].item() == pytest.approx(grid1[0].item()) and entry.sigmas[-1] == 0
    assert entry.sigmas[-2] >= 0.0292 * (1 - 1e-5)  # inside the model's σ range
    inner = Gaussian().inner_model.sigmas
    fit = webui.lambdas.distill(Gaussian(), x, grid1, sampler="euler", scale=2, extra_args=args(), disable=True,
                                schedule=True, sigma_range=(float(inner[0]), float(inner[-1])))
    assert torch.equal(entry.sigmas, fit.sigmas) and torch.equal(out1, fit.samples)  # the model's σ range reached it
    info = p1.extra_generation_params
    assert info["D-ODE schedule"] == f"fitted {path.name}#0" and info["D-ODE λ"] == f"{path.name}#0"
    assert info["D-ODE fit"].startswith("final + schedule, ")
    stock = webui.core.sample(Gaussian(), x, grid1, sampler="euler", extra_args=args(), disable=True)
    teacher = webui.core.sample(Gaussian(), x, webui.lambdas.teacher_grid(grid1, grid1, 2),
                                sampler=webui.lambdas.DEFAULT_TEACHER, extra_args=args(), disable=True)
    assert (out1 - teacher).norm() < 0.5 * (stock - teacher).norm()
    p2 = make_p(scheduler="D-ODE fitted")  # the next generation samples on the fitted grid with its λ, no fit
    out2, grid2, _ = generate(webui, "Euler (D-ODE)", p2, 5)
    assert torch.equal(grid2, entry.sigmas.float()) and "D-ODE fit" not in p2.extra_generation_params
    assert p2.extra_generation_params["D-ODE schedule"] == f"fitted {path.name}#0"
    torch.testing.assert_close(out2, out1, rtol=0, atol=1e-4)


def test_auto_distill_without_fit_schedule_keeps_the_karras_grid(webui):
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_fit_schedule = False
    webui.shared.opts.dode_scale = 2
    p = make_p(scheduler="D-ODE fitted")
    _, grid, _ = generate(webui, "Euler (D-ODE)", p, 5)
    (entry,) = webui.lambdas.load_lambdas(webui.tmp / "models" / "D-ODE" / f"toy_{webui.ident}.dode.safetensors")
    assert entry.schedule == "given" and torch.equal(entry.sigmas, grid.double())
    assert p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"
    p = make_p(scheduler="D-ODE fitted")
    generate(webui, "Euler (D-ODE)", p, 5)  # still no fitted schedule: Karras again, now with its λ
    assert p.extra_generation_params["D-ODE schedule"] == "Karras (no fit)"
    assert p.extra_generation_params["D-ODE λ"].endswith("#0") and "D-ODE fit" not in p.extra_generation_params


def test_xyz_cells_do_not_inherit_the_infotext_of_the_cell_before(webui):
    """The X/Y/Z plot runs each cell on copy(p): one extra_generation_params dict for all cells."""
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 2
    p = make_p(scheduler="D-ODE fitted")
    generate(webui, "Euler (D-ODE)", p, 4)
    assert {"D-ODE schedule", "D-ODE λ", "D-ODE fit"} <= set(p.extra_generation_params)
    cell = copy(p)
    cell.scheduler = "Karras"
    generate(webui, "Euler (D-ODE)", cell, 4)  # λ exists for nothing on Karras yet: fitted now, no schedule
    assert cell.extra_generation_params is p.extra_generation_params
    assert "D-ODE schedule" not in cell.extra_generation_params and "D-ODE fit" in cell.extra_generation_params
    cell = copy(p)
    cell.scheduler = "Karras"
    generate(webui, "Euler", cell, 4)  # a stock sampler: no D-ODE infotext at all
    assert not [k for k in cell.extra_generation_params if k.startswith("D-ODE")]
    hires = copy(p)
    hires.extra_generation_params = {"D-ODE λ": "first.safetensors#0", "Hires D-ODE λ": "old.safetensors#3"}
    hires.is_hr_pass, hires.hr_scheduler = True, "Karras"
    generate(webui, "Euler", hires, 4)  # the Hires pass clears only its own keys
    assert hires.extra_generation_params == {"D-ODE λ": "first.safetensors#0"}
