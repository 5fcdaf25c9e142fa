"""The lab's shared protocol: the digits model's noise and Karras grid, NFE budgets, the converged-ODE reference,
half-precision autocast and JSON output, used by the bench, the demo and every study."""
import json

import torch

from ..lambdas import teacher_grid
from ..samplers import get_solver, karras_sigmas, nfe, sample
from .testbed import SIGMA_MAX, SIGMA_MIN

CONVERGED_STEPS = 400
DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_model(model, dtype):
    """``model`` run under CPU autocast in ``dtype`` (its output back in float32), as a host runs a half-precision
    checkpoint with a float32 sampler; ``model`` itself for float32."""
    if DTYPES[dtype] is None:
        return model

    def half(x, sigma, **extra_args):
        with torch.autocast("cpu", dtype=DTYPES[dtype]):
            return model(x, sigma, **extra_args).float()

    return half


def noise(batch, seed):
    """Initial latents σ_max · ε for the (B, 1, 8, 8) digits model."""
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * SIGMA_MAX


def grid(steps):
    return karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX)


def steps_for_nfe(sampler, budget):
    """The most steps whose network evaluations fit in ``budget`` (Heun and 2S use two per step)."""
    steps = 1
    while nfe(sampler, grid(steps + 1)) <= budget:
        steps += 1
    return steps


def cases(samplers, budgets):
    """(sampler, steps) for every sampler at each network-evaluation budget, in increasing steps (Heun and 2S: the
    most steps that fit a budget, so two budgets can give one case)."""
    return [(sampler, steps) for sampler in samplers
            for steps in sorted({steps_for_nfe(sampler, budget) for budget in budgets})]


def teacher_output(model, x, sigmas, sampler, teacher, scale):
    """What the greedy fit's teacher gives for x: ``teacher`` on the grid distill() builds for ``sampler``."""
    teacher_sigmas = teacher_grid(sigmas, get_solver(sampler).landings(sigmas), scale).to(sigmas.dtype)
    return sample(model, x, teacher_sigmas, teacher, disable=True)


def converged(model, x, progress=False):
    """The converged probability-flow ODE solution for x (Heun, CONVERGED_STEPS Karras steps); ``progress`` shows
    the sampler's step bar."""
    return sample(model, x, grid(CONVERGED_STEPS), "heun", disable=not progress)


def held_out_reference(model, eval_batch, log=print):
    """The studies' held-out noise (seed 1) and its converged ODE solution, announced through ``log`` (with a step bar
    when ``log`` is print); returns (eval_x, reference)."""
    eval_x = noise(eval_batch, 1)
    log(f"converged ODE reference on {eval_batch} held-out latents …")
    return eval_x, converged(model, eval_x, progress=log is print)


def write_json(result, path):
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
