"""The stub WebUI (tests/webui_stub) with the extension loaded as A1111 loads it, and the helpers its tests share.

A pytest plugin (tests/conftest.py): the fixture ``webui``; its ``ext`` is the extension's ``webui`` package.
"""
import hashlib
import importlib.util
import os
import sys
from types import SimpleNamespace

import pytest
import torch

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
    from modules import paths, script_callbacks, sd_models, sd_samplers, shared
    monkeypatch.setattr(paths, "models_path", str(tmp_path / "models"))
    script = load_script()
    script_callbacks.ui_settings_callback()
    ckpt = tmp_path / "models" / "Stable-diffusion" / "toy.safetensors"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not really a checkpoint" * 100)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    info = SimpleNamespace(filename=str(ckpt), sha256=sha, shorthash=sha[:10], title=f"toy.safetensors [{sha[:10]}]")
    shared.sd_model = sd_models.model_data.sd_model = SimpleNamespace(sd_checkpoint_info=info, sd_model_hash=sha[:10])
    yield SimpleNamespace(script=script, ext=sys.modules[PKG + ".webui"], sd_samplers=sd_samplers, shared=shared,
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
    """A generation's settings; ``comment`` is the WebUI's (its comments show under the images)."""
    p = SimpleNamespace(**{"extra_generation_params": {}, "is_hr_pass": False, "cfg_scale": 7.0,
                           "scheduler": "Automatic", "comments": {}, **kw})
    p.comment = lambda text: p.comments.__setitem__(text, 1)
    return p


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
