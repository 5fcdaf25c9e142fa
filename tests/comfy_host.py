"""The stub ComfyUI (tests/comfy_stub) with the pack's adapter imported into it, and the helpers its tests share.

A pytest plugin (tests/conftest.py): the fixtures ``cx`` (one stub per test module) and ``clean``.
"""
import contextlib
import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

STUB = str(Path(__file__).resolve().parent / "comfy_stub")
STUB_TOPS = ("comfy", "comfy_api", "folder_paths", "latent_preview", "server")
ADAPTER_MODULES = (  # imported in this order; ``cx.<last name>`` (``cx.kds``: comfy's k-diffusion sampling)
    "folder_paths", "comfy.samplers", "comfy.sample", "comfy.utils", "comfy.model_management", "comfy.model_base",
    "comfy.model_patcher", "comfy.model_sampling", "comfy.k_diffusion.sampling", "latent_preview", "dode.nodes",
    "dode.nodes.sampling", "dode.nodes.context", "dode.nodes.options", "dode.lambdas.resolve", "dode.nodes.identity",
    "dode.nodes.store", "dode.nodes.v3", "dode.nodes.schedule", "dode.nodes.feedback", "server")


def _drop(prefixes):
    for name in [n for n in sys.modules if n.split(".")[0] in prefixes or n.startswith("dode.nodes")]:
        del sys.modules[name]


@contextlib.contextmanager
def stubbed_comfy(base, modules=ADAPTER_MODULES):
    """The stub ComfyUI rooted at ``base`` with ``modules`` imported into it, in order (``ns.<last name>``; ``ns.kds``:
    comfy's k-diffusion sampling); the modules it replaced come back afterwards."""
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in STUB_TOPS or n.startswith("dode.nodes")}
    old_env = os.environ.get("DODE_STUB_COMFY_BASE")
    os.environ["DODE_STUB_COMFY_BASE"] = str(base)
    sys.path.insert(0, STUB)
    _drop(STUB_TOPS)
    try:
        ns = type("Comfy", (), {})()
        ns.base = base
        for mod in modules:
            attr = "kds" if mod == "comfy.k_diffusion.sampling" else mod.split(".")[-1]
            setattr(ns, attr, importlib.import_module(mod))
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


@pytest.fixture(scope="module")
def cx(tmp_path_factory):
    """The stubbed ComfyUI with the pack's adapter imported into it (as ComfyUI would import it)."""
    with stubbed_comfy(tmp_path_factory.mktemp("comfy_base")) as ns:
        yield ns


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


def with_options(cx, model, **kwargs):
    defaults = {"on_missing": "stock", "identity": "full", "teacher": "heun", "scale": 3}
    return cx.v3.ModelOptions.execute(model, **{**defaults, **kwargs}).args[0]


def custom(cx, model, sampler, sigmas, seed=1, cfg=3.0, batch=1):
    lat = latent(batch)["samples"]
    noise = cx.sample.prepare_noise(lat, seed)
    return cx.sample.sample_custom(model, noise, cfg, sampler, sigmas, cond(0.5), cond(-0.5), lat, seed=seed)


def told(cx, part):
    """The dode.status texts sent to the browser that contain ``part``."""
    return [data["text"] for event, data, sid in cx.ui.messages if event == "dode.status" and part in data["text"]]


def fitted_entry(cx, model, sampler="euler", steps=6, cfg=3.0, lam=0.3):
    """A fitted-schedule entry for ``model`` (as Distill λ with fit_schedule writes), its grid inside the model's."""
    from dode import LambdaEntry, nfe
    stock = cx.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).double()
    grid = stock.clone()
    grid[1:-1] = stock[1:-1] * 0.8  # another interior: a grid no stock scheduler gives
    identity = cx.context.model_identity(model)
    return LambdaEntry(sampler=sampler, sigmas=grid, lambdas=[lam] * nfe(sampler, grid), model=identity.key,
                       cfg=cfg, schedule="fitted", objective="final", metrics=identity.as_meta())
