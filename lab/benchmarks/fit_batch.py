"""How many latents a fit needs: the final-sample fits fitted on 4, 8, 16, 32 and 256 latents, judged on 2000 others.

Small fit batches are drawn three times (five for 4 latents; independent noise) so the spread shows; 256 latents
once. Every row is judged against the converged ODE on the same held-out noise (FD in the digits classifier's
features, RMSE).

    python -m dode.lab.benchmarks.fit_batch           # prints the table, writes fit_batch.json
"""
import statistics

import torch
from tqdm.auto import tqdm

from ..protocol import grid, held_out_reference, noise, write_json
from ...lambdas import distill
from ...samplers import sample
from ..testbed import fd_digits, load_tiny_model, rmse

CASES = (("euler", 5), ("dpmpp_2m", 5), ("euler", 10))
BATCHES = (4, 8, 16, 32, 256)
DRAWS = {4: 5}  # independent fit batches per size below 256: five of 4 latents, three of any other size
FITS = {"final": {}, "schedule": {"schedule": True}}


def fit_batches(size):
    """The fit batches of one size: seed-0 latents for 256, else DRAWS independent draws (seeds 10, 11, …)."""
    return [noise(size, 0)] if size >= 256 else [noise(size, 10 + k) for k in range(DRAWS.get(size, 3))]


def run(cases=CASES, batches=BATCHES, eval_batch=2000, log=print):
    model = load_tiny_model()
    eval_x, reference = held_out_reference(model, eval_batch, log)
    result = {"fd_converged": fd_digits(reference), "eval_batch": eval_batch, "rows": []}
    log("| sampler | steps | fit | fit latents | FD (each draw) | FD median / ODE | RMSE median |\n"
        "|---|---|---|---|---|---|---|")
    jobs = [(s, n, name, size) for s, n in cases for name in FITS for size in batches]
    with tqdm(jobs, desc="fit-batch study", unit="row", leave=False) as bar:
        emit = bar.write if log is print else log
        for sampler, steps, name, size in bar:
            sigmas = grid(steps)
            fds, rmses = [], []
            for x in fit_batches(size):
                fit = distill(model, x, sigmas, sampler, objective="final", disable=True, **FITS[name])
                out = sample(model, eval_x, fit.sigmas.to(sigmas.dtype), sampler, lambdas=fit.lambdas, disable=True)
                fds.append(fd_digits(out))
                rmses.append(rmse(out, reference))
            row = {"sampler": sampler, "steps": steps, "fit": name, "fit_batch": size, "fd": fds, "rmse": rmses}
            result["rows"].append(row)
            emit(f"| {sampler} | {steps} | {name} | {size} | {', '.join(f'{v:.2f}' for v in fds)} | "
                 f"{statistics.median(fds) / result['fd_converged']:.2f} | {statistics.median(rmses):.4f} |")
    return result


def main():
    torch.set_num_threads(1)
    write_json(run(), "fit_batch.json")
    print("wrote fit_batch.json")


if __name__ == "__main__":
    main()
