"""The weight of the final fit's detail term, measured: ``dode.distill(..., schedule=S, detail=w)`` for several w.

The distance to the teacher's final sample alone (w = 0) lets a student that cannot match the teacher regress
towards the mean: softer samples at the same pixel distance (lambdas/final.py). For every sampler at 4, 5 and 10
network evaluations, with and without a fitted schedule, and each weight, the fit is made on three independent
batches of 256 latents (seeds 0, 20, 21; seed 0 is the bench's) and judged on 2000 held-out ones: FD in the digits
classifier over the converged ODE's FD, RMSE to the converged ODE, and the detail ratio mean‖∇x‖ / mean‖∇x_ODE‖
(1 = as much detail as the ODE).

The weight is chosen on the tiny digits model; the same study at w = 0 and 1 on the exact empirical denoiser of the
digits (E[x0 | x] over the 1797 shipped digits: a model whose ODE ends on the data points, which no weight was chosen
on) checks that the choice carries over.

    python -m dode.lab.benchmarks.detail              # prints the tables, writes detail.json
"""
import math
import statistics

import torch
from tqdm.auto import tqdm

from ..protocol import cases, grid, held_out_reference, noise, write_json
from ...lambdas import distill
from ...lambdas.final import detail_norms
from ...samplers import SAMPLER_NAMES, sample
from ..testbed import digits_empirical, fd_digits, load_tiny_model, rmse

NFES = (4, 5, 10)
WEIGHTS = (0.0, 0.25, 1.0, 4.0)
CHECK_WEIGHTS = (0.0, 1.0)  # on the exact empirical denoiser
SEEDS = (0, 20, 21)
FITS = ("schedule", "lambda")  # λ and σ fitted (schedule=True), λ alone on the user's grid


def geometric_mean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def run(model, jobs=None, weights=WEIGHTS, seeds=SEEDS, fit_batch=256, eval_batch=2000, log=print):
    eval_x, reference = held_out_reference(model, eval_batch, log)
    fd_converged, detail_converged = fd_digits(reference), detail_norms(reference).mean().item()
    fit_xs = [noise(fit_batch, seed) for seed in seeds]
    result = {"fd_converged": fd_converged, "eval_batch": eval_batch, "fit_batch": fit_batch, "seeds": list(seeds),
              "rows": []}
    log("| fit | sampler | steps | detail weight | FD / ODE (each draw) | FD median / ODE | RMSE median | "
        "detail ratio |\n|---|---|---|---|---|---|---|---|")
    jobs = cases(SAMPLER_NAMES, NFES) if jobs is None else jobs
    jobs = [(f, s, n, w) for f in FITS for s, n in jobs for w in weights]
    with tqdm(jobs, desc="detail-weight study", unit="row", leave=False) as bar:
        emit = bar.write if log is print else log
        for fit_kind, sampler, steps, weight in bar:
            sigmas = grid(steps)
            fds, rmses, details = [], [], []
            for x in fit_xs:
                fit = distill(model, x, sigmas, sampler, schedule=fit_kind == "schedule", detail=weight,
                              disable=True)
                out = sample(model, eval_x, fit.sigmas.to(sigmas.dtype), sampler, lambdas=fit.lambdas, disable=True)
                fds.append(fd_digits(out) / fd_converged)
                rmses.append(rmse(out, reference))
                details.append(detail_norms(out).mean().item() / detail_converged)
            result["rows"].append({"fit": fit_kind, "sampler": sampler, "steps": steps, "detail": weight,
                                   "fd_ratio": fds, "rmse": rmses, "detail_ratio": details})
            emit(f"| {fit_kind} | {sampler} | {steps} | {weight:g} | {', '.join(f'{v:.2f}' for v in fds)} | "
                 f"{statistics.median(fds):.2f} | {statistics.median(rmses):.4f} | "
                 f"{statistics.median(details):.3f} |")
    result["summary"] = summary(result["rows"], weights)
    log("| fit | detail weight | geometric mean of the median FD / ODE | of the median RMSE |\n|---|---|---|---|")
    for row in result["summary"]:
        log(f"| {row['fit']} | {row['detail']:g} | {row['fd_ratio']:.3f} | {row['rmse']:.4f} |")
    return result


def summary(rows, weights):
    """Per fit and weight, the geometric means over all cases of the median FD ratio and of the median RMSE."""
    def mean_of(key, fit, w):
        return geometric_mean([statistics.median(r[key]) for r in rows if r["fit"] == fit and r["detail"] == w])
    return [{"fit": f, "detail": w, "fd_ratio": mean_of("fd_ratio", f, w), "rmse": mean_of("rmse", f, w)}
            for f in FITS for w in weights]


def main():
    torch.set_num_threads(1)
    result = {"tiny": run(load_tiny_model())}
    print("\nThe exact empirical denoiser of the digits:")
    result["empirical"] = run(digits_empirical(), weights=CHECK_WEIGHTS)
    write_json(result, "detail.json")
    print("wrote detail.json")


if __name__ == "__main__":
    main()
