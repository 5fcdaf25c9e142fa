"""Benchmark on the embedded tiny digits model: stock vs D-ODE samplers at a given NFE budget.

λ is fitted on one batch of noise and judged on different (held-out) noise, against the teacher and against a
converged ODE solution (Heun on a fine Karras grid). Quality is the Fréchet distance in the features of the
digits classifier ("FD") and the RMSE to the converged ODE."""
import json
import time

import torch

from .lambdas import DEFAULT_FIRST_STEP, DEFAULT_SCALE, DEFAULT_TEACHER, distill, teacher_grid
from .samplers import get_solver, karras_sigmas, nfe, sample
from .testbed import SIGMA_MAX, SIGMA_MIN, fd_digits, load_tiny_model, rmse

DEFAULT_NFES = (4, 5, 6, 8, 10)
CONVERGED_STEPS = 400


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


def timed_sample(model, x, sigmas, sampler, lambdas=None, repeats=3):
    """Samples and returns (output, best wall time over ``repeats``)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = sample(model, x, sigmas, sampler, lambdas=lambdas, disable=True)
        best = min(best, time.perf_counter() - start)
    return out, best


def teacher_output(model, x, sigmas, sampler, teacher, scale):
    """What the fit's teacher gives for x: ``teacher`` on the grid distill() builds for ``sampler`` on ``sigmas``."""
    teacher_sigmas = teacher_grid(sigmas, get_solver(sampler).landings(sigmas), scale).to(sigmas.dtype)
    return sample(model, x, teacher_sigmas, teacher, disable=True)


def converged(model, x):
    """The converged probability-flow ODE solution for x (Heun, CONVERGED_STEPS Karras steps)."""
    return sample(model, x, grid(CONVERGED_STEPS), "heun", disable=True)


def bench_row(model, sampler, steps, fit_x, eval_x, reference, teacher, scale, first_step):
    """One table row: fit λ on fit_x, then judge stock / D-ODE / teacher on eval_x."""
    sigmas = grid(steps)
    fit = distill(model, fit_x, sigmas, sampler, teacher=teacher, scale=scale, first_step=first_step, disable=True)
    stock, t_stock = timed_sample(model, eval_x, sigmas, sampler)
    dode, t_dode = timed_sample(model, eval_x, sigmas, sampler, fit.lambdas)
    teacher_out = teacher_output(model, eval_x, sigmas, sampler, teacher, scale)
    return {"sampler": sampler, "nfe": nfe(sampler, sigmas), "steps": len(sigmas) - 1,
            "fd_stock": fd_digits(stock), "fd_dode": fd_digits(dode), "fd_teacher": fd_digits(teacher_out),
            "rmse_stock": rmse(stock, reference), "rmse_dode": rmse(dode, reference),
            "fit_seconds": fit.report.seconds, "time_ratio": t_dode / t_stock,
            "lambdas": [round(v, 4) for v in fit.lambdas.tolist()]}


def run_bench(samplers, budgets, teacher=DEFAULT_TEACHER, scale=DEFAULT_SCALE, first_step=DEFAULT_FIRST_STEP,
              fit_batch=256, eval_batch=2000, log=print):
    """All rows plus the converged-ODE reference numbers, as a JSON-able dict."""
    model = load_tiny_model()
    fit_x, eval_x = noise(fit_batch, 0), noise(eval_batch, 1)
    start = time.perf_counter()
    reference = converged(model, eval_x)
    check = sample(model, eval_x, grid(CONVERGED_STEPS // 2), "heun", disable=True)
    result = {"teacher": teacher, "scale": scale, "first_step": first_step, "fit_batch": fit_batch,
              "eval_batch": eval_batch, "converged_steps": CONVERGED_STEPS, "fd_converged": fd_digits(reference),
              "converged_self_rmse": rmse(check, reference), "converged_seconds": time.perf_counter() - start,
              "threads": torch.get_num_threads(), "rows": []}
    log(f"converged ODE: Heun {CONVERGED_STEPS} steps, FD {result['fd_converged']:.3f}, "
        f"RMSE vs Heun {CONVERGED_STEPS // 2}: {result['converged_self_rmse']:.2e}")
    log(header())
    for sampler in samplers:
        for steps in sorted({steps_for_nfe(sampler, budget) for budget in budgets}):
            row = bench_row(model, sampler, steps, fit_x, eval_x, reference, teacher, scale, first_step)
            result["rows"].append(row)
            log(format_row(row, result["fd_converged"]))
    return result


def header():
    return (f"| {'sampler':<9} | {'NFE':>3} | {'FD stock':>8} | {'FD D-ODE':>8} | {'FD teacher':>10} | "
            f"{'FD ODE':>6} | {'RMSE stock':>10} | {'RMSE D-ODE':>10} | {'fit s':>5} | {'time ×':>6} |\n"
            f"|{'-' * 11}|{'-' * 5}|{'-' * 10}|{'-' * 10}|{'-' * 12}|{'-' * 8}|{'-' * 12}|{'-' * 12}|"
            f"{'-' * 7}|{'-' * 8}|")


def format_row(row, fd_converged):
    return (f"| {row['sampler']:<9} | {row['nfe']:>3} | {row['fd_stock']:>8.2f} | {row['fd_dode']:>8.2f} | "
            f"{row['fd_teacher']:>10.2f} | {fd_converged:>6.2f} | {row['rmse_stock']:>10.4f} | "
            f"{row['rmse_dode']:>10.4f} | {row['fit_seconds']:>5.2f} | {row['time_ratio']:>6.2f} |")


def write_json(result, path):
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
