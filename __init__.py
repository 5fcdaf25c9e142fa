"""dode: D-ODE solvers (distilled few-step diffusion samplers) for ComfyUI, the A1111/Forge WebUI and Python.

Library use: ``import dode``; ``dode.distill(...)`` fits λ, ``dode.sample(...)`` samples with it.
"""
from ._version import __version__
from .lambdas import (DistillResult, LambdaEntry, LambdaFileError, LambdaNotFound, LambdaStore, distill,
                      find_lambdas, load_lambdas, save_lambdas)
from .samplers import SAMPLER_NAMES, nfe, sample

__all__ = ["__version__", "SAMPLER_NAMES", "sample", "nfe", "distill", "DistillResult", "LambdaEntry",
           "LambdaFileError", "LambdaNotFound", "LambdaStore", "find_lambdas", "load_lambdas", "save_lambdas"]
