"""The D-ODE samplers and their registry.

Each sampler has k-diffusion's signature plus ``lambdas=None``; ``landings(sigmas)`` gives, per network evaluation,
the noise level of the state that evaluation's λ corrects (the fit's teacher targets sit there)."""
from dataclasses import dataclass
from typing import Callable

from .base import check_batch, check_sigmas, karras_sigmas
from .dpmpp import dpmpp_2m_landings, sample_dpmpp_2m
from .euler import euler_landings, sample_euler
from .heun import heun_landings, sample_heun


@dataclass(frozen=True)
class Solver:
    name: str
    fn: Callable
    landings: Callable
    label: str


SOLVERS = {s.name: s for s in (
    Solver("euler", sample_euler, euler_landings, "Euler"),
    Solver("heun", sample_heun, heun_landings, "Heun"),
    Solver("dpmpp_2m", sample_dpmpp_2m, dpmpp_2m_landings, "DPM++ 2M"),
)}
SAMPLER_NAMES = tuple(SOLVERS)


def get_solver(name):
    """The registered solver called ``name``, or a ValueError that lists the valid names."""
    if name not in SOLVERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return SOLVERS[name]


def nfe(sampler, sigmas):
    """Number of network evaluations of ``sampler`` on ``sigmas``, which is the length of its λ vector."""
    return len(get_solver(sampler).landings(sigmas))


def sample(model, x, sigmas, sampler="euler", lambdas=None, extra_args=None, callback=None, disable=None):
    """Runs the D-ODE sampler ``sampler`` (``lambdas=None``: the stock sampler)."""
    solver = get_solver(sampler)
    check_batch(x)
    return solver.fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, lambdas=lambdas)


__all__ = ["SAMPLER_NAMES", "SOLVERS", "Solver", "get_solver", "nfe", "sample", "check_sigmas", "karras_sigmas",
           "sample_euler", "sample_heun", "sample_dpmpp_2m"]
