"""λ files move between hosts: a file written by the ComfyUI adapter (tests/comfy_stub) is found by the WebUI adapter
(tests/webui_stub) and vice versa, for the same checkpoint file, and only when the model is exactly that file."""
import logging
import shutil
from pathlib import Path

import pytest
import torch

import comfy_host
import webui_host


def on_file(cx, path):
    """A ComfyUI MODEL loaded from ``path`` (newer ComfyUI records the file in cached_patcher_init)."""
    model = comfy_host.make_model(cx)
    model.cached_patcher_init = (object, (str(path), {}))
    return model


def with_lora(cx, model):
    lora = model.clone()
    lora.add_patches({"diffusion_model.proj.weight": ("diff", (torch.full((4, 4, 1, 1), 0.01),))}, 0.8)
    return lora


def with_sampling_override(cx, model):
    shifted = model.clone()  # a ModelSampling* node, even one that sets the default values
    shifted.add_object_patch("model_sampling", type(model.model.model_sampling)())
    return shifted


def webui_lambda(w, sigmas, cfg=3.0):
    """The infotext reference of the λ a WebUI generation used (``none``: the stock sampler)."""
    p = webui_host.make_p(cfg_scale=cfg)
    webui_host.run(w, "Euler (D-ODE)", p, sigmas)
    return p.extra_generation_params["D-ODE λ"]


def comfy_lambda(cx, model, caplog):
    """Where the ComfyUI dropdown sampler found λ, or None (it ran the stock sampler)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dode"):
        comfy_host.ksample(cx, model, "euler_dode", cfg=3.0)
    found = [r.getMessage() for r in caplog.records if "λ from" in r.getMessage()]
    return found[0] if found else None


def test_comfyui_file_works_in_the_webui(clean, webui):
    target = webui.tmp / "models" / "D-ODE"
    target.mkdir(parents=True)
    _, lambdas, *_ = comfy_host.distill(clean, on_file(clean, webui.ckpt), cfg=3.0)
    entry = lambdas.entries[0]
    assert entry.model.startswith("fp1-") and entry.aliases == [webui.ident]
    (made,) = clean.lambda_dir.glob("*.safetensors")
    shutil.copy(made, target)
    assert webui_lambda(webui, entry.sigmas) == f"{made.name}#0"

    # another checkpoint in the WebUI: not found
    other = webui.ckpt.with_name("other.safetensors")
    other.write_bytes(b"another checkpoint")
    webui.info.filename, webui.info.sha256, webui.info.shorthash = str(other), None, None
    assert webui_lambda(webui, entry.sigmas) == "none"


@pytest.mark.parametrize("change", [with_lora, with_sampling_override])
def test_comfyui_file_of_a_patched_model_is_not_found_in_the_webui(clean, webui, change):
    target = webui.tmp / "models" / "D-ODE"
    target.mkdir(parents=True)
    _, lambdas, *_ = comfy_host.distill(clean, change(clean, on_file(clean, webui.ckpt)), cfg=3.0)
    assert lambdas.entries[0].aliases == []
    for made in clean.lambda_dir.glob("*.safetensors"):
        shutil.copy(made, target)
    assert webui_lambda(webui, lambdas.entries[0].sigmas) == "none"


def test_webui_file_works_in_comfyui(clean, webui, caplog, tmp_path):
    model = on_file(clean, webui.ckpt)
    sigmas = clean.v3.compute_sigmas(model, "euler", "karras", 6, 1.0)
    webui.shared.opts.dode_auto_distill = True
    webui.shared.opts.dode_scale = 4
    ref = webui_lambda(webui, sigmas)
    made = webui.tmp / "models" / "D-ODE" / ref.split("#")[0]
    assert made.is_file() and webui.lambdas.load_lambdas(made)[0].model == webui.ident
    clean.lambda_dir.mkdir(parents=True)
    shutil.copy(made, clean.lambda_dir)

    assert made.name in comfy_lambda(clean, model, caplog)
    assert comfy_lambda(clean, with_lora(clean, model), caplog) is None
    assert comfy_lambda(clean, with_sampling_override(clean, model), caplog) is None
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"another checkpoint")
    assert comfy_lambda(clean, on_file(clean, other), caplog) is None
    assert comfy_lambda(clean, comfy_host.make_model(clean), caplog) is None  # older ComfyUI: no file, no alias


# --- the same miss cases through both hosts: the same kind of result and the core's one message ------------------

MISSES = [  # (case, change to the request, expected kind, what the message names)
    ("another steps count", dict(steps=5), "stock", "6 steps, not 5"),
    ("another cfg", dict(cfg=4.0), "stock", "cfg 3, not 4"),
    ("another model", dict(other_model=True), "stock", "another model"),
    ("a broken file", dict(broken=True, no_fit=True), "stock", "skipped unreadable λ files: broken.safetensors"),
    ("an unsaved fit", dict(unsaved=True, no_fit=True), "not saved", "λ fitted but not saved"),
]


class ComfyHost:
    """Runs one generation through the ComfyUI adapter (stub) and says what it did."""

    def __init__(self, cx, webui, tmp_path):
        self.cx, self.ckpt, self.tmp = cx, webui.ckpt, tmp_path
        self.folder = cx.lambda_dir

    def sigmas(self, steps):
        return self.cx.v3.compute_sigmas(on_file(self.cx, self.ckpt), "euler", "karras", steps, 1.0)

    def model(self, other_model=False, auto=False):
        path = self.tmp / "other.safetensors" if other_model else self.ckpt
        if other_model:
            path.write_bytes(b"another checkpoint")
        model = on_file(self.cx, path)
        return comfy_host.with_options(self.cx, model, on_missing="auto_distill", scale=2) if auto else model

    def blocked_save(self):
        return Path(self.cx.store.default_file(self.cx.context.model_identity(on_file(self.cx, self.ckpt)), "euler"))

    def generate(self, caplog, steps=6, cfg=3.0, other_model=False, auto=False):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="dode"):
            comfy_host.ksample(self.cx, self.model(other_model, auto), "euler_dode", steps=steps, cfg=cfg, batch=2)
        text = "\n".join(r.getMessage() for r in caplog.records)
        kind = "not saved" if "λ fitted but not saved" in text else "lambda" if "λ from" in text else "stock"
        return kind, text


class WebuiHost:
    """Runs one generation through the WebUI adapter (stub) and says what it did."""

    def __init__(self, webui):
        self.w = webui
        self.folder = webui.tmp / "models" / "D-ODE"

    def sigmas(self, steps):
        return webui_host.karras(steps)

    def blocked_save(self):
        return self.folder / f"toy_{self.w.ident}.dode.safetensors"

    def generate(self, caplog, steps=6, cfg=3.0, other_model=False, auto=False):
        if other_model:
            other = self.w.ckpt.with_name("other.safetensors")
            other.write_bytes(b"another checkpoint")
            self.w.info.filename, self.w.info.sha256, self.w.info.shorthash = str(other), None, None
        self.w.shared.opts.dode_auto_distill, self.w.shared.opts.dode_scale = auto, 2
        caplog.clear()
        p = webui_host.make_p(cfg_scale=cfg)
        with caplog.at_level(logging.INFO, logger="dode"):
            webui_host.run(self.w, "Euler (D-ODE)", p, self.sigmas(steps))
        ref = p.extra_generation_params["D-ODE λ"]
        return {"none": "stock", "not saved": "not saved"}.get(ref, "lambda"), caplog.text + ref


@pytest.mark.parametrize("host", ["comfyui", "webui"])
@pytest.mark.parametrize("case, change, kind, message", MISSES, ids=[m[0] for m in MISSES])
def test_the_same_miss_gives_the_same_result_in_both_hosts(clean, webui, caplog, tmp_path, host, case, change,
                                                          kind, message):
    h = ComfyHost(clean, webui, tmp_path) if host == "comfyui" else WebuiHost(webui)
    h.folder.mkdir(parents=True, exist_ok=True)
    if not change.get("no_fit"):  # a fit for this checkpoint (its AutoV2), euler, 6 steps, cfg 3
        sigmas = h.sigmas(6)
        entry = webui.lambdas.LambdaEntry("euler", sigmas, torch.full((6,), 0.2), model=webui.ident, cfg=3.0)
        webui.lambdas.save_lambdas(h.folder / "fit.safetensors", entry)
        assert h.generate(caplog)[0] == "lambda"
    if change.get("broken"):
        (h.folder / "broken.safetensors").write_bytes(b"not a lambda file")
    if change.get("unsaved"):
        h.blocked_save().write_bytes(b"damaged")
    got, text = h.generate(caplog, steps=change.get("steps", 6), cfg=change.get("cfg", 3.0),
                           other_model=change.get("other_model", False), auto=change.get("unsaved", False))
    assert got == kind and message in text, text
    if change.get("unsaved"):  # the next run uses the fit kept in memory, without fitting again
        got, text = h.generate(caplog, auto=True)
        assert got == "lambda" and "an unsaved fit of this process" in text, text
