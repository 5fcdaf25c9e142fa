"""Ablation: teacher targets matched by noise level (dode) vs by step index (the official D-ODE code).

The official EDM code runs an Euler teacher on its own Karras grid of scale × NFE steps and takes the target of
student evaluation j at teacher index (j + 1)·scale (Heun: predictor (2i + 1)·scale, corrector (2i + 2)·scale), so
most targets sit at other noise levels than the states they are compared with. dode refines the student's grid
instead, so every target sits at the σ the student lands on. Both use the same closed-form fit (dode's LambdaFit).

    python -m dode.lab.benchmarks.alignment          # prints the table, writes alignment.json
"""
import json

import torch

from ..protocol import grid, noise, converged, steps_for_nfe
from ...lambdas import distill
from ...lambdas.fit import FitReport, LambdaFit
from ...samplers import get_solver, karras_sigmas, nfe, sample
from ..testbed import SIGMA_MAX, SIGMA_MIN, fd_digits, load_tiny_model, rmse


class InOrder:
    """Teacher targets handed out in evaluation order, whatever σ the student lands on (index matching)."""

    def __init__(self, states):
        self.states = iter(states)

    def at(self, sigma):
        return next(self.states)


def index_matched_lambdas(model, x, sigmas, sampler, scale):
    """λ fitted the official way: Euler teacher on Karras(scale × NFE), target j at teacher index (j + 1)·scale."""
    evals = nfe(sampler, sigmas)
    teacher_sigmas = karras_sigmas(scale * evals, SIGMA_MIN, SIGMA_MAX)
    states = []
    final = sample(model, x, teacher_sigmas, "euler", callback=lambda d: states.append(d["x"]), disable=True)
    states.append(final)
    targets = [states[min((j + 1) * scale, len(states) - 1)] for j in range(evals)]
    fit = LambdaFit(InOrder(targets), FitReport())
    get_solver(sampler).fn(model, x, sigmas, disable=True, lambdas=fit)
    return torch.tensor(fit.lambdas, dtype=torch.float64)


def main(samplers=("euler", "heun"), budgets=(5, 10), scale=10):
    torch.set_num_threads(1)
    model = load_tiny_model()
    fit_x, eval_x = noise(256, 0), noise(2000, 1)
    reference = converged(model, eval_x)
    rows = []
    print("| sampler | NFE | FD stock | FD index-matched (official) | FD σ-matched, Euler teacher | "
          "FD σ-matched, default teacher | RMSE stock | RMSE index | RMSE σ Euler | RMSE σ default |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for sampler in samplers:
        for budget in budgets:
            sigmas = grid(steps_for_nfe(sampler, budget))
            variants = {
                "stock": None,
                "index": index_matched_lambdas(model, fit_x, sigmas, sampler, scale),
                "sigma_euler": distill(model, fit_x, sigmas, sampler, teacher="euler", scale=scale, objective="greedy",
                                       disable=True).lambdas,
                "sigma_default": distill(model, fit_x, sigmas, sampler, scale=scale, objective="greedy", disable=True).lambdas,
            }
            outs = {k: sample(model, eval_x, sigmas, sampler, lambdas=v, disable=True) for k, v in variants.items()}
            row = {"sampler": sampler, "nfe": nfe(sampler, sigmas),
                   **{f"fd_{k}": fd_digits(o) for k, o in outs.items()},
                   **{f"rmse_{k}": rmse(o, reference) for k, o in outs.items()},
                   **{f"lambdas_{k}": v.tolist() for k, v in variants.items() if v is not None}}
            rows.append(row)
            print(f"| {sampler} | {row['nfe']} | " + " | ".join(f"{row['fd_' + k]:.2f}" for k in variants) + " | "
                  + " | ".join(f"{row['rmse_' + k]:.4f}" for k in variants) + " |")
    with open("alignment.json", "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
