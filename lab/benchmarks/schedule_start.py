"""Where the schedule fit starts: the user's grid alone, the user's or the equidistributed grid, or every screened start.

``distill(..., schedule=True)`` screens the start grids of lambdas/grids.py ``start_grids`` (λ = 0 on each), gives
the best a short fit and the best of those the rest of the budget (lambdas/final.py ``fit_final``). This study fits
each case with the screening cut down to the user's grid, to the user's and the equidistributed grid, and whole;
the same latents and budget, judged on 2000 fresh latents: the fit's RMSE to the teacher on the fit batch, FD and
RMSE to the converged ODE. A second table does the same on the lab's other learned models (RGB patches, their
4-channel latents, class-conditional digits at cfg 6; 64 latents, fit seeds 10 and 11): RMSE to the teacher on the
fit batch, the objective the screening ranks by. A third table fits the exact GMM of the tests (64-d, 8 modes, 16 latents, 5 Karras
steps, teacher scale 4) the three ways, next to λ alone on the user's grid: RMSE to the teacher's final sample on the
fit batch.

    python -m dode.lab.benchmarks.schedule_start      # prints the table, writes schedule_start.json
"""
import contextlib
import statistics
from unittest import mock

import torch
from tqdm.auto import tqdm

from ..protocol import grid, held_out_reference, write_json
from ...lambdas import distill
from ...lambdas import final
from ...lambdas.grids import start_grids
from ...samplers import karras_sigmas, sample
from ..testbed import fd_digits, load_tiny_model, rmse
from ..testbed.denoisers import make_gmm
from ..testbed.lab_models import load_lab_model
from .fit_batch import fit_batches

CASES = (("euler", 5, 16), ("dpmpp_2m", 5, 16), ("euler", 5, 256), ("dpmpp_2m", 5, 256), ("dpmpp_2m", 4, 256),
         ("dpmpp_3m", 4, 256))
STARTS = {"user grid": ("user grid",), "two starts": ("user grid", "equidistributed"), "screened": None}
GMM_SAMPLERS = ("euler", "dpmpp_2m", "dpmpp_3m", "heun", "ipndm", "deis")
GMM_SEEDS = (2, 5)
LAB = (("rgb", "latent", "digits_cfg"), (("euler", 5), ("dpmpp_2m", 5), ("euler", 4)), (10, 11), 64)


def fit_from(start, model, x, sigmas, sampler, **options):
    """The schedule fit as distill() makes it ("screened"), or with its starts cut down to those of STARTS[start]."""
    keep = STARTS[start]
    cut = mock.patch.object(final, "start_grids",
                            lambda *args: {k: v for k, v in start_grids(*args).items() if k in keep})
    with contextlib.nullcontext() if keep is None else cut:
        return distill(model, x, sigmas, sampler, schedule=True, disable=True, **options)


def gmm_rows(log):
    """RMSE to the teacher on the fit batch, exact GMM: λ alone, and the schedule fit from each set of STARTS."""
    model, sigmas = make_gmm(dim=64, k=8, seed=0), karras_sigmas(5)
    rows = []
    log("| sampler | seed | RMSE stock | λ alone | schedule, user grid | schedule, two starts | schedule, screened |\n"
        "|---|---|---|---|---|---|---|")
    for seed in GMM_SEEDS:
        x = torch.randn(16, 64, generator=torch.Generator().manual_seed(seed)) * 80.0
        for sampler in GMM_SAMPLERS:
            alone = distill(model, x, sigmas, sampler, scale=4, disable=True)
            fits = {start: fit_from(start, model, x, sigmas, sampler, scale=4) for start in STARTS}
            rows.append({"sampler": sampler, "seed": seed, "rmse_stock": alone.report.rmse_stock,
                         "rmse_alone": alone.report.rmse_after,
                         **{f"rmse_{start.replace(' ', '_')}": fit.report.rmse_after for start, fit in fits.items()}})
            log(f"| {sampler} | {seed} | {alone.report.rmse_stock:.4f} | {alone.report.rmse_after:.4f} | "
                + " | ".join(f"{fit.report.rmse_after:.4f}" for fit in fits.values()) + " |")
    return rows


def lab_rows(log):
    """RMSE to the teacher on the fit batch for each set of STARTS, on the other lab models."""
    names, cases, seeds, size = LAB
    rows = []
    log("| model | sampler | steps | seed | " + " | ".join(STARTS) + " |\n|---|---|---|---|" + "---|" * len(STARTS))
    for name in names:
        lab = load_lab_model(name, cfg=6.0)
        for sampler, steps in cases:
            sigmas = karras_sigmas(steps, lab.sigma_min, lab.sigma_max)
            for seed in seeds:
                fits = {start: fit_from(start, lab.denoiser, lab.noise(size, seed), sigmas, sampler,
                                        extra_args=lab.extra_args(size, seed),
                                        sigma_range=(lab.sigma_min, lab.sigma_max)).report.rmse_after
                        for start in STARTS}
                rows.append({"model": name, "sampler": sampler, "steps": steps, "seed": seed, "rmse_fit": fits})
                log(f"| {name} | {sampler} | {steps} | {seed} | " + " | ".join(f"{v:.4f}" for v in fits.values()) + " |")
    return rows


def run(cases=CASES, eval_batch=2000, log=print):
    model = load_tiny_model()
    eval_x, reference = held_out_reference(model, eval_batch, log)
    result = {"fd_converged": fd_digits(reference), "eval_batch": eval_batch, "rows": []}
    log("| sampler | steps | fit latents | start | fit RMSE to teacher (each draw) | FD / ODE (each draw) | "
        "FD median / ODE | RMSE to ODE median |\n|---|---|---|---|---|---|---|---|")
    jobs = [(s, n, size, start) for s, n, size in cases for start in STARTS]
    with tqdm(jobs, desc="schedule-start study", unit="row", leave=False) as bar:
        emit = bar.write if log is print else log
        for sampler, steps, size, start in bar:
            sigmas = grid(steps)
            fits, fds, rmses = [], [], []
            for x in fit_batches(size):
                fit = fit_from(start, model, x, sigmas, sampler)
                out = sample(model, eval_x, fit.sigmas.to(sigmas.dtype), sampler, lambdas=fit.lambdas, disable=True)
                fits.append(fit.report.rmse_after)
                fds.append(fd_digits(out) / result["fd_converged"])
                rmses.append(rmse(out, reference))
            result["rows"].append({"sampler": sampler, "steps": steps, "fit_batch": size, "start": start,
                                   "rmse_fit": fits, "fd_ratio": fds, "rmse": rmses})
            emit(f"| {sampler} | {steps} | {size} | {start} | {', '.join(f'{v:.4f}' for v in fits)} | "
                 f"{', '.join(f'{v:.2f}' for v in fds)} | {statistics.median(fds):.2f} | "
                 f"{statistics.median(rmses):.4f} |")
    return result


def main():
    torch.set_num_threads(1)
    result = run()
    result["lab"] = lab_rows(print)
    result["gmm"] = gmm_rows(print)
    write_json(result, "schedule_start.json")
    print("wrote schedule_start.json")


if __name__ == "__main__":
    main()
