"""The final fit's defaults, measured: Jacobian batch, budget and teacher scale of the schedule fit.

Each variant changes one default of ``dode.distill(..., schedule=True)`` and is fitted on the bench's 256 latents,
then judged on 2000 held-out ones (FD, RMSE to the converged ODE); "cost" is its network rows over the greedy fit's.

    python -m dode.lab.benchmarks.final_fit           # prints the table, writes final_fit.json
"""

import torch
from tqdm.auto import tqdm

from ..protocol import grid, held_out_reference, noise, write_json
from ...lambdas import distill
from ...lambdas.fit import SCHEDULE_BUDGET
from ...samplers import sample
from ..testbed import fd_digits, load_tiny_model, rmse

CASES = (("euler", 5), ("dpmpp_2m", 5), ("euler", 10))
VARIANTS = {
    "defaults": {},
    "jacobian_batch=16": {"jacobian_batch": 16},
    "jacobian_batch=256": {"jacobian_batch": 256},
    "budget ×2": {"budget": 2 * SCHEDULE_BUDGET},
    "scale=5": {"scale": 5},
    "scale=3": {"scale": 3},
}


def run(cases=CASES, variants=VARIANTS, fit_batch=256, eval_batch=2000, log=print):
    model = load_tiny_model()
    fit_x = noise(fit_batch, 0)
    eval_x, reference = held_out_reference(model, eval_batch, log)
    result = {"fd_converged": fd_digits(reference), "rows": []}
    log("| sampler | steps | variant | FD | FD / ODE | RMSE | cost |\n|---|---|---|---|---|---|---|")
    jobs = [(s, n, name) for s, n in cases for name in variants]
    with tqdm(jobs, desc="final-fit variants", unit="fit", leave=False) as bar:
        emit = bar.write if log is print else log
        greedy = {}
        for sampler, steps, name in bar:
            sigmas = grid(steps)
            if (sampler, steps) not in greedy:
                greedy[(sampler, steps)] = distill(model, fit_x, sigmas, sampler, objective="greedy",
                                                   disable=True).report.network_rows
            fit = distill(model, fit_x, sigmas, sampler, schedule=True, disable=True, **variants[name])
            out = sample(model, eval_x, fit.sigmas.to(sigmas.dtype), sampler, lambdas=fit.lambdas, disable=True)
            row = {"sampler": sampler, "steps": steps, "variant": name, "fd": fd_digits(out),
                   "rmse": rmse(out, reference), "cost": fit.report.network_rows / greedy[(sampler, steps)]}
            result["rows"].append(row)
            emit(f"| {sampler} | {steps} | {name} | {row['fd']:.2f} | {row['fd'] / result['fd_converged']:.2f} | "
                 f"{row['rmse']:.4f} | {row['cost']:.1f} |")
    return result


def main():
    torch.set_num_threads(1)
    write_json(run(), "final_fit.json")
    print("wrote final_fit.json")


if __name__ == "__main__":
    main()
