"""Small fit batches: would choosing among the states a fit visits by their distance on fresh hold-out noise undo
its overfit? The final + σ fit on 4 and 16 latents (the bench's fit seeds), then, of the fit's answer and every
accepted trial, the one closest to the teacher on HOLDOUT fresh latents; both judged on 2000 other latents (FD ÷ the
converged ODE's). The hold-out costs the teacher on its latents and one student run there per state judged.

    python -m dode.lab.benchmarks.holdout          # prints the table, writes holdout.json
"""
import statistics

import torch

from ...lambdas import distill, teacher_grid
from ...samplers import nfe, sample
from ..bench import FIT_SEEDS
from ..protocol import grid, held_out_reference, noise, write_json
from ..testbed import fd_digits, load_tiny_model

CASES = (("euler", 5), ("dpmpp_2m", 5))
BATCHES = {4: FIT_SEEDS, 16: FIT_SEEDS[:3]}
HOLDOUT = 8
TEACHER, SCALE = "dpmpp_2m", 10


def distance(out, target):
    return (out - target).square().mean().sqrt().item()


def candidates(fit):
    """(λ, σ grid) of the fit's answer and of every accepted trial."""
    states = [(fit.lambdas.tolist(), fit.sigmas.tolist())]
    return states + [(t["lambdas"], t["sigmas"]) for t in fit.report.trials if t["accepted"]]


def chosen_by_holdout(model, sampler, fit, x, target):
    """The candidate closest to the teacher on the hold-out latents, its distance there, the network rows judged."""
    scored = [(distance(sample(model, x, torch.tensor(s, dtype=torch.float32), sampler, lambdas=lam, disable=True),
                        target), lam, s) for lam, s in candidates(fit)]
    best = min(scored, key=lambda item: item[0])
    return best[1], best[2], best[0], len(scored) * nfe(sampler, fit.sigmas) * x.shape[0]


def fd_of(model, eval_x, sampler, lambdas, sigmas):
    return fd_digits(sample(model, eval_x, torch.tensor(sigmas, dtype=torch.float32), sampler, lambdas=lambdas,
                            disable=True))


def run(cases=CASES, batches=BATCHES, eval_batch=2000, log=print):
    torch.set_num_threads(1)
    model = load_tiny_model()
    eval_x, reference = held_out_reference(model, eval_batch, log)
    ode = fd_digits(reference)
    result = {"fd_converged": ode, "holdout": HOLDOUT, "rows": []}
    log("| sampler | steps | fit latents | fit: FD ÷ ODE per draw | hold-out choice | median / worst, fit → "
        "hold-out | hold-out rows ÷ fit rows |\n|---|---|---|---|---|---|---|")
    for sampler, steps in cases:
        sigmas = grid(steps)
        teacher = teacher_grid(sigmas, sigmas, SCALE).float()
        for size, seeds in batches.items():
            draws = []
            for seed in seeds:
                fit = distill(model, noise(size, seed), sigmas, sampler, objective="final", schedule=True,
                              teacher=TEACHER, scale=SCALE, disable=True)
                x_hold = noise(HOLDOUT, 1000 + seed)
                target = sample(model, x_hold, teacher, TEACHER, disable=True)
                lam, grid_, hold_rmse, judged = chosen_by_holdout(model, sampler, fit, x_hold, target)
                cost = (len(teacher) - 1) * HOLDOUT + judged
                draws.append({"seed": seed, "fit": fd_of(model, eval_x, sampler, fit.lambdas.tolist(),
                                                         fit.sigmas.tolist()) / ode,
                              "holdout": fd_of(model, eval_x, sampler, lam, grid_) / ode,
                              "holdout_rmse": hold_rmse, "cost": cost / fit.report.network_rows})
            row = {"sampler": sampler, "steps": steps, "fit_latents": size, "draws": draws}
            result["rows"].append(row)
            fits, holds = [d["fit"] for d in draws], [d["holdout"] for d in draws]
            log(f"| {sampler} | {steps} | {size} | {', '.join(f'{v:.2f}' for v in fits)} | "
                f"{', '.join(f'{v:.2f}' for v in holds)} | {statistics.median(fits):.2f} / {max(fits):.2f} → "
                f"{statistics.median(holds):.2f} / {max(holds):.2f} | "
                f"{statistics.median(d['cost'] for d in draws):.2f} |")
    return result


if __name__ == "__main__":
    write_json(run(), "holdout.json")
    print("wrote holdout.json")
