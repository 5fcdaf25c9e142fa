"""What a sampler call learns from ComfyUI: the ModelPatcher, cfg, options, model identity and flow mode."""
import os
from dataclasses import replace

from . import feedback, store
from . import identity as ident
from .options import MODEL_OPTIONS_KEY, DodeOptions


class Run:
    """What a sampler function learns about the call: the ModelPatcher, the cfg, the options and the identity."""

    def __init__(self, model, extra_args):
        guider = getattr(model, "inner_model", None)
        self.patcher = getattr(guider, "model_patcher", None)
        cfg = getattr(guider, "cfg", None)
        self.cfg = float(cfg) if isinstance(cfg, (int, float)) else None
        self.guider_problem = guider_problem(guider)
        model_options = (extra_args or {}).get("model_options") or {}
        options = model_options.get(MODEL_OPTIONS_KEY)
        self.options = options if isinstance(options, DodeOptions) else DodeOptions()
        self.flow = comfy_flow(getattr(getattr(guider, "inner_model", None), "model_sampling", None))
        self._identity = None
        self.identity_error = None

    @property
    def identity(self):
        """The model fingerprint, or None (with ``identity_error`` set) if this MODEL does not allow one."""
        if self._identity is None and self.identity_error is None:
            if self.patcher is None:
                self.identity_error = "the sampler was not called through a ComfyUI guider with a ModelPatcher"
            else:
                try:
                    self._identity = model_identity(self.patcher, self.options.identity)
                except Exception as e:  # a model we cannot fingerprint must not stop sampling
                    self.identity_error = f"cannot fingerprint this model ({type(e).__name__}: {e})"
        return self._identity


def model_identity(patcher, mode="full"):
    """The fingerprint of ``patcher``, named after its loader's file where ComfyUI does not record it (v0.3.x)."""
    identity = ident.fingerprint(patcher, mode, store.hash_cache())
    if identity.name == "model":
        name = loader_file_name()
        if name:
            identity = replace(identity, name=name)
    return identity


def guider_problem(guider):
    """Why λ cannot be keyed for this guider (two CFG scales, e.g. Guider_DualCFG), or None."""
    if guider is not None and hasattr(guider, "cfg1") and hasattr(guider, "cfg2"):
        return (f"{type(guider).__name__} has two CFG scales (cfg1 {guider.cfg1:g}, cfg2 {guider.cfg2:g}) and λ is "
                "fitted for one; use a single-scale guider (KSampler, SamplerCustom, CFGGuider) with D-ODE")
    return None


def current_prompt():
    """``(prompt, node id)`` of the prompt ComfyUI is executing now, or ``(None, None)``."""
    instance = feedback.prompt_server()
    queue = getattr(instance, "prompt_queue", None)
    running = getattr(queue, "currently_running", None)
    if not isinstance(running, dict) or len(running) != 1:
        return None, None
    item = next(iter(running.values()))
    prompt = item[2] if isinstance(item, (tuple, list)) and len(item) > 2 else None
    return (prompt, getattr(instance, "last_node_id", None)) if isinstance(prompt, dict) else (None, None)


LOADER_INPUTS = ("ckpt_name", "unet_name")


def loader_file_name(prompt=None, node_id=None):
    """Host workaround (prompt walk): the stem of the checkpoint / UNET file upstream of ``node_id``'s model, or None."""
    if prompt is None:
        prompt, node_id = current_prompt()
    if not isinstance(prompt, dict):
        return None
    if str(node_id) not in prompt:
        loaders = [key for key, node in prompt.items() if isinstance(node, dict) and
                   any(isinstance((node.get("inputs") or {}).get(name), str) for name in LOADER_INPUTS)]
        node_id = loaders[0] if len(loaders) == 1 else None
    seen = set()
    node = prompt.get(str(node_id))
    while isinstance(node, dict) and id(node) not in seen:
        seen.add(id(node))
        inputs = node.get("inputs") or {}
        for key in LOADER_INPUTS:
            if isinstance(inputs.get(key), str):
                return os.path.splitext(os.path.basename(inputs[key]))[0]
        link = inputs.get("model")
        node = prompt.get(str(link[0])) if isinstance(link, list) and link else None
    return None


def comfy_flow(model_sampling):
    """The core's ``flow`` option for this model: ComfyUI's offset first σ for rectified-flow (CONST) models, as its
    own DPM++ 2S/3M samplers use it, else False."""
    try:
        import comfy.model_sampling as cms
    except ImportError:
        return False
    if not isinstance(model_sampling, getattr(cms, "CONST", ())):
        return False
    try:
        first = float(model_sampling.percent_to_sigma(1e-4))
    except Exception:
        return True
    return first if 0 < first < 1 else True
