"""The D-ODE samplers and their registry.

Each sampler has k-diffusion's signature plus ``lambdas=None``; ``landings(sigmas)`` gives, per network evaluation,
the noise level of the state that evaluation's λ corrects (the fit's teacher targets sit there). Solvers whose stock
update depends on the model's parameterization (DPM++ 2S and 3M in ComfyUI) also take ``flow=`` in both; the others
integrate dx/dσ = (x − D)/σ, which is exact for rectified-flow models too, and ignore it."""
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from .base import check_batch, check_sigmas, karras_sigmas
from .dpmpp import (dpmpp_2m_landings, dpmpp_2s_landings, dpmpp_3m_landings, sample_dpmpp_2m, sample_dpmpp_2s,
                    sample_dpmpp_3m)
from .euler import euler_landings, sample_euler
from .heun import heun_landings, sample_heun
from .multistep import deis_landings, ipndm_landings, sample_deis, sample_ipndm


@dataclass(frozen=True)
class Solver:
    name: str
    fn: Callable
    landings: Callable
    label: str
    flow: bool = False  # fn and landings take ``flow=`` (see dpmpp.flow_first_sigma)


SOLVERS = {s.name: s for s in (
    Solver("euler", sample_euler, euler_landings, "Euler"),
    Solver("heun", sample_heun, heun_landings, "Heun"),
    Solver("dpmpp_2m", sample_dpmpp_2m, dpmpp_2m_landings, "DPM++ 2M"),
    Solver("dpmpp_2s", sample_dpmpp_2s, dpmpp_2s_landings, "DPM++ 2S", flow=True),
    Solver("dpmpp_3m", sample_dpmpp_3m, dpmpp_3m_landings, "DPM++ 3M", flow=True),
    Solver("ipndm", sample_ipndm, ipndm_landings, "iPNDM"),
    Solver("deis", sample_deis, deis_landings, "DEIS"),
)}
SAMPLER_NAMES = tuple(SOLVERS)


def get_solver(name):
    """The registered solver called ``name``, or a ValueError that lists the valid names."""
    if name not in SOLVERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return SOLVERS[name]


def flow_option(solver, flow):
    """The keyword arguments that pass the ``flow`` option to ``solver`` (none for a solver it does not change)."""
    return {"flow": flow} if solver.flow and flow else {}


def nfe(sampler, sigmas):
    """Number of network evaluations of ``sampler`` on ``sigmas``, which is the length of its λ vector."""
    return len(get_solver(sampler).landings(sigmas))


def landing_sigmas(sampler, sigmas, flow=False):
    """Per network evaluation of ``sampler``, the noise level of the state its λ corrects."""
    solver = get_solver(sampler)
    return solver.landings(sigmas, **flow_option(solver, flow))


def sample(model, x, sigmas, sampler="euler", lambdas=None, extra_args=None, callback=None, disable=None, flow=False):
    """Runs the D-ODE sampler ``sampler`` (``lambdas=None``: the stock sampler).

    ``flow``: False for VE/EDM models; for rectified-flow models True, or the host's offset first σ (ComfyUI:
    ``model_sampling.percent_to_sigma(1e-4)``), so that DPM++ 2S and 3M do what the host's stock samplers do.
    The model's output D must have x's shape (a broadcastable one is a ValueError, not a silent broadcast); with λ, a
    NaN/inf output warns once (the correction λ (D − D_prev) would carry it into every later step)."""
    solver = get_solver(sampler)
    check_batch(x)
    if lambdas is not None and not callable(lambdas):
        check_lambda_values(lambdas)
    checked = checked_model(model, x.shape, warn_nonfinite=lambdas is not None)
    return solver.fn(checked, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, lambdas=lambdas,
                     **flow_option(solver, flow))


def check_lambda_values(lambdas):
    """Rejects a λ argument that is not numbers (e.g. a list of strings) with a ValueError that says so."""
    try:
        torch.as_tensor(lambdas, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"lambdas must be a tensor or a list of numbers (one per network evaluation), got "
                         f"{type(lambdas).__name__} {str(lambdas)[:60]}; load λ with dode.load_lambdas") from e


def checked_model(model, shape, warn_nonfinite):
    """``model`` with its output checked: D must have the state's ``shape``; if ``warn_nonfinite``, the first
    NaN/inf output warns (once per sampling run)."""
    warned = False

    def denoise(x, sigma, **kwargs):
        nonlocal warned
        denoised = model(x, sigma, **kwargs)
        if not torch.is_tensor(denoised) or denoised.shape != shape:
            raise ValueError(f"the model returned {describe_output(denoised)} for a state of shape {tuple(shape)}; a "
                             "denoiser must return D with x's shape (check the model wrapper)")
        if warn_nonfinite and not warned and not torch.isfinite(denoised).all():
            warned = True
            warnings.warn(f"the model returned NaN/inf at σ={sigma.flatten()[0].item():.4g}; the D-ODE sample will "
                          "not be finite (check the model, its dtype and the σ grid)", RuntimeWarning, stacklevel=2)
        return denoised

    return denoise


def describe_output(value):
    return f"shape {tuple(value.shape)}" if torch.is_tensor(value) else f"a {type(value).__name__}"


__all__ = ["SAMPLER_NAMES", "SOLVERS", "Solver", "get_solver", "nfe", "landing_sigmas", "sample", "check_sigmas",
           "karras_sigmas", "sample_euler", "sample_heun", "sample_dpmpp_2m", "sample_dpmpp_2s", "sample_dpmpp_3m",
           "sample_ipndm", "sample_deis"]
