"""Small fit batches: where their overfit lives, and whether fresh hold-out noise catches it. The final + σ fit on
4 and 16 latents (the bench's fit seeds) and on 256, judged on 2000 other latents (FD ÷ the converged ODE's): the
fit as it is; its λ on the 256-latent fit's grid (is it the grid or λ that a small batch gets wrong?); and, of the
fit's answer and every accepted trial, the one closest to the teacher on HOLDOUT fresh latents (the hold-out costs
the teacher on its latents and one student run there per state judged).

    python -m dode.lab.benchmarks.small_batches    # prints the table, writes small_batches.json
"""
import statistics

import torch

from ...lambdas import distill, teacher_grid
from ...samplers import nfe, sample
from ..bench import FIT_SEEDS
from ..protocol import grid, held_out_reference, noise, write_json
from ..testbed import fd_digits, load_tiny_model, rmse

CASES = (("euler", 5), ("dpmpp_2m", 5))
BATCHES = {4: FIT_SEEDS, 16: FIT_SEEDS[:3]}
HOLDOUT = 8
TEACHER, SCALE = "dpmpp_2m", 10


def candidates(fit):
    """(λ, σ grid) of the fit's answer and of every accepted trial."""
    states = [(fit.lambdas.tolist(), fit.sigmas.tolist())]
    return states + [(t["lambdas"], t["sigmas"]) for t in fit.report.trials if t["accepted"]]


def chosen_by_holdout(model, sampler, fit, x, target):
    """The candidate closest to the teacher on the hold-out latents, its distance there, the network rows judged."""
    scored = [(rmse(sample(model, x, torch.tensor(s, dtype=torch.float32), sampler, lambdas=lam, disable=True),
                   target), lam, s) for lam, s in candidates(fit)]
    best = min(scored, key=lambda item: item[0])
    return best[1], best[2], best[0], len(scored) * nfe(sampler, fit.sigmas) * x.shape[0]


def schedule_fit(model, x, sigmas, sampler):
    return distill(model, x, sigmas, sampler, objective="final", schedule=True, teacher=TEACHER, scale=SCALE,
                   disable=True)


def fd_of(model, eval_x, sampler, lambdas, sigmas):
    return fd_digits(sample(model, eval_x, torch.tensor(sigmas, dtype=torch.float32), sampler, lambdas=lambdas,
                            disable=True))


def run(cases=CASES, batches=BATCHES, eval_batch=2000, log=print):
    torch.set_num_threads(1)
    model = load_tiny_model()
    eval_x, reference = held_out_reference(model, eval_batch, log)
    ode = fd_digits(reference)
    result = {"fd_converged": ode, "holdout": HOLDOUT, "rows": []}
    log("| sampler | steps | fit latents | the fit: FD ÷ ODE per draw | its λ on the 256-latent grid | hold-out "
        "choice | median / worst: fit → hold-out | hold-out rows ÷ fit rows |\n|---|---|---|---|---|---|---|---|")
    for sampler, steps in cases:
        sigmas = grid(steps)
        teacher = teacher_grid(sigmas, sigmas, SCALE).float()
        full = schedule_fit(model, noise(256, FIT_SEEDS[0]), sigmas, sampler)
        full_grid = full.sigmas.tolist()
        full_fd = fd_of(model, eval_x, sampler, full.lambdas.tolist(), full_grid) / ode
        result["rows"].append({"sampler": sampler, "steps": steps, "fit_latents": 256, "fit": full_fd,
                               "sigmas": full_grid})
        log(f"| {sampler} | {steps} | 256 | {full_fd:.2f} | | | | |")
        for size, seeds in batches.items():
            draws = []
            for seed in seeds:
                fit = schedule_fit(model, noise(size, seed), sigmas, sampler)
                x_hold = noise(HOLDOUT, 1000 + seed)
                target = sample(model, x_hold, teacher, TEACHER, disable=True)
                lam, grid_, hold_rmse, judged = chosen_by_holdout(model, sampler, fit, x_hold, target)
                cost = (len(teacher) - 1) * HOLDOUT + judged
                draws.append({"seed": seed, "sigmas": fit.sigmas.tolist(),
                              "fit": fd_of(model, eval_x, sampler, fit.lambdas.tolist(), fit.sigmas.tolist()) / ode,
                              "on_full_grid": fd_of(model, eval_x, sampler, fit.lambdas.tolist(), full_grid) / ode,
                              "holdout": fd_of(model, eval_x, sampler, lam, grid_) / ode,
                              "holdout_rmse": hold_rmse, "cost": cost / fit.report.network_rows})
            result["rows"].append({"sampler": sampler, "steps": steps, "fit_latents": size, "draws": draws})
            fits, on_grid, holds = ([d[key] for d in draws] for key in ("fit", "on_full_grid", "holdout"))
            log(f"| {sampler} | {steps} | {size} | {listed(fits)} | {listed(on_grid)} | {listed(holds)} | "
                f"{statistics.median(fits):.2f} / {max(fits):.2f} → {statistics.median(holds):.2f} / {max(holds):.2f}"
                f" | {statistics.median(d['cost'] for d in draws):.2f} |")
    return result


def listed(values):
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    write_json(run(), "small_batches.json")
    print("wrote small_batches.json")
