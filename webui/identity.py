"""The model identity of a generation: the checkpoint's AutoV2 hash and its active extra networks."""
import hashlib
import json
import os

from ..lambdas import autov2
from .paths import lambda_dir


def loaded_model():
    """The loaded model, or None; unlike ``shared.sd_model`` (which loads one when none is), it never loads."""
    try:
        from modules import sd_models
    except ImportError:
        return None
    model_data = getattr(sd_models, "model_data", None)
    if model_data is None:  # a WebUI without SdModelData
        from modules import shared
        return getattr(shared, "sd_model", None)
    return getattr(model_data, "sd_model", None)


def checkpoint(p):
    """(AutoV2 hash or None, CheckpointInfo or None) of the model being sampled (``p`` None: the loaded model, if
    any; nothing is loaded)."""
    if p is None:
        sd_model = loaded_model()
    else:
        from modules import shared
        sd_model = getattr(p, "sd_model", None) or getattr(shared, "sd_model", None)
    info = getattr(sd_model, "sd_checkpoint_info", None)
    short = getattr(info, "shorthash", None) or (getattr(info, "sha256", None) or "")[:10] or None
    filename = getattr(info, "filename", None)
    if short is None and filename and os.path.isfile(filename):  # --no-hashing
        short = autov2(filename, cache=os.path.join(lambda_dir(), "sha256-cache.json"))
    return (short.lower() if short else None), info


def extra_networks(p):
    """The active extra networks (LoRA, hypernetworks, ...) of the generation as sorted [type, items] pairs."""
    data = getattr(p, "extra_network_data", None) or {}
    return sorted([kind, [str(item) for item in getattr(params, "items", [])]]
                  for kind, params_list in data.items() for params in params_list)


def identity(p):
    """(model identity, CheckpointInfo): the AutoV2 hash, plus ``+nets-<digest>`` of active extra networks."""
    short, info = checkpoint(p)
    nets = extra_networks(p)
    if short is None or not nets:
        return short, info
    return f"{short}+nets-{hashlib.blake2b(json.dumps(nets).encode(), digest_size=6).hexdigest()}", info


def is_bare_checkpoint(entry):
    """An entry fitted on a bare checkpoint: no extra networks (WebUI) and no weight patches recorded (ComfyUI)."""
    return "+nets-" not in entry.model and entry.metrics.get("model_patches", "none") == "none"
