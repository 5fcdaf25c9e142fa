"""dode: D-ODE solvers (distilled few-step diffusion samplers) for ComfyUI, the A1111/Forge WebUI and Python.

Library use: ``import dode``; ``dode.distill(...)`` fits λ, ``dode.sample(...)`` samples with it.
"""
from ._version import __version__
from .lambdas import (DistillResult, LambdaEntry, LambdaFileError, LambdaNotFound, LambdaStore, distill,
                      find_lambdas, find_schedule, load_lambdas, save_lambdas)
from .samplers import SAMPLER_NAMES, nfe, sample

__all__ = ["__version__", "SAMPLER_NAMES", "sample", "nfe", "distill", "DistillResult", "LambdaEntry",
           "LambdaFileError", "LambdaNotFound", "LambdaStore", "find_lambdas", "find_schedule", "load_lambdas",
           "save_lambdas"]

# --- ComfyUI entry (owned by nodes/; keep this block last) ---------------------------------------------------------
# ComfyUI imports this folder as a custom-node pack with `folder_paths` and `comfy` already imported. Only then is the
# adapter loaded (the *_dode dropdown samplers, the dode scheduler, models/dode_lambdas, the sampling/dode nodes) and
# the mappings set; WEB_DIRECTORY serves web/ (the toasts and Distill λ's report). Library users (`import dode`) never
# import comfy. A failure here is logged and leaves ComfyUI running.
import sys as _sys

if "folder_paths" in _sys.modules and "comfy" in _sys.modules:
    try:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    except Exception as _error:  # never break ComfyUI
        import logging as _logging
        _logging.getLogger("dode").warning("[dode] the D-ODE pack could not load its ComfyUI adapter (%s: %s)",
                                           type(_error).__name__, _error, exc_info=True)
        NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
    WEB_DIRECTORY = "./web"
    __all__ += ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
