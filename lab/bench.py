"""Benchmark on the embedded tiny digits model: stock vs the three D-ODE fits at a given NFE budget.

For each sampler and budget, λ is fitted on one batch of noise three ways (the paper's greedy fit, λ fitted to the
final sample, λ and σ schedule fitted to the final sample) and every result is judged on different (held-out) noise
against the converged ODE solution (Heun on a fine Karras grid): the Fréchet distance in the features of the digits
classifier ("FD", real digits vs themselves: 0.55–0.86) and the per-pixel RMSE to the converged ODE. Each row also
gives the fits' cost (network rows, relative to the greedy fit) and sampling time, timed interleaved."""
import time

import torch
from tqdm.auto import tqdm

from ..lambdas import DEFAULT_FIRST_STEP, DEFAULT_TEACHER, distill
from ..samplers import nfe, sample
from .protocol import CONVERGED_STEPS, autocast_model, cases, converged, grid, noise
from .testbed import fd_digits, load_tiny_model, rmse

DEFAULT_NFES = (4, 5, 6, 8, 10)
FITS = {"greedy": {"objective": "greedy"}, "final": {"objective": "final"},
        "schedule": {"objective": "final", "schedule": True}}
TIMING_ROUNDS = 5
FIT_SEEDS = (0, 20, 21, 22, 23)  # the schedule fit's fit batches: the bench's (seed 0), then the extra draws


def time_ratio(model, x, sigmas, sampler, fit, rounds=TIMING_ROUNDS):
    """Median wall time of D-ODE sampling over stock sampling, the two runs alternating (noise hits both alike)."""
    stock, dode = [], []
    for _ in range(rounds):
        for times, grid_, lambdas in ((stock, sigmas, None), (dode, fit.sigmas.to(sigmas.dtype), fit.lambdas)):
            start = time.perf_counter()
            sample(model, x, grid_, sampler, lambdas=lambdas, disable=True)
            times.append(time.perf_counter() - start)
    return sorted(dode)[rounds // 2] / sorted(stock)[rounds // 2]


def judge(model, eval_x, sigmas, sampler, reference, fit=None):
    """FD and RMSE to the converged ODE of ``sampler`` on held-out noise, stock (no fit) or with the fit."""
    out = sample(model, eval_x, sigmas if fit is None else fit.sigmas.to(sigmas.dtype), sampler,
                 lambdas=None if fit is None else fit.lambdas, disable=True)
    return {"fd": fd_digits(out), "rmse": rmse(out, reference)}


def fit_summary(fit):
    """A fit's cost, distances on its fit batch, λ, grid, warnings and search, for the JSON."""
    return {"network_calls": fit.report.network_calls, "network_rows": fit.report.network_rows,
            "fit_seconds": fit.report.seconds, "rmse_fit_stock": fit.report.rmse_stock,
            "rmse_fit": fit.report.rmse_after, "lambdas": [round(v, 4) for v in fit.lambdas.tolist()],
            "sigmas": [float(f"{v:.6g}") for v in fit.sigmas.tolist()], "warnings": fit.report.warnings,
            "start": fit.report.start, "noise_floor": fit.report.noise_floor}


def bench_row(model, sampler, steps, fit_x, eval_x, reference, teacher, first_step, fits=tuple(FITS),
              seed_batches=()):
    """One table row: stock and each of ``fits``, judged on eval_x, with the fits' cost; the schedule fit also on
    each of ``seed_batches`` (other fit batches: ``schedule_seeds``)."""
    sigmas = grid(steps)
    row = {"sampler": sampler, "nfe": nfe(sampler, sigmas), "steps": steps,
           "stock": judge(model, eval_x, sigmas, sampler, reference)}
    for name in fits:
        fit = distill(model, fit_x, sigmas, sampler, teacher=teacher, first_step=first_step, disable=True,
                      **FITS[name])
        row[name] = {**judge(model, eval_x, sigmas, sampler, reference, fit), **fit_summary(fit)}
        if name == "schedule":
            row["time_ratio"] = time_ratio(model, eval_x, sigmas, sampler, fit)
            row["schedule_seeds"] = [{"fd": row[name]["fd"], "rmse": row[name]["rmse"],
                                      "network_rows": row[name]["network_rows"]}]
            for x in seed_batches:
                extra = distill(model, x, sigmas, sampler, teacher=teacher, first_step=first_step, disable=True,
                                **FITS[name])
                row["schedule_seeds"].append({**judge(model, eval_x, sigmas, sampler, reference, extra),
                                              "network_rows": extra.report.network_rows})
    return row


def run_bench(samplers, budgets, teacher=DEFAULT_TEACHER, first_step=DEFAULT_FIRST_STEP, fit_batch=256,
              eval_batch=2000, log=print, dtype="float32", seeds=1, fits=tuple(FITS)):
    """All rows plus the converged-ODE reference numbers, as a JSON-able dict; rows are logged as they finish. The
    network runs in ``dtype`` (CPU autocast; the reference is the float32 model's converged ODE); the schedule fit
    is also made on ``seeds`` − 1 further fit batches (FIT_SEEDS)."""
    if not 1 <= seeds <= len(FIT_SEEDS):
        raise ValueError(f"seeds must be 1 to {len(FIT_SEEDS)}, got {seeds!r}")
    tiny = load_tiny_model()
    model = autocast_model(tiny, dtype)
    fit_x, eval_x = noise(fit_batch, FIT_SEEDS[0]), noise(eval_batch, 1)
    seed_batches = [noise(fit_batch, seed) for seed in FIT_SEEDS[1:seeds]]
    start = time.perf_counter()
    log(f"converged ODE reference: Heun {CONVERGED_STEPS} steps on {eval_batch} held-out latents …")
    reference = converged(tiny, eval_x, progress=log is print)
    check = sample(tiny, eval_x, grid(CONVERGED_STEPS // 2), "heun", disable=log is not print)
    result = {"teacher": teacher, "first_step": first_step, "fit_batch": fit_batch, "eval_batch": eval_batch,
              "dtype": dtype, "fit_seeds": list(FIT_SEEDS[:seeds]), "fits": list(fits),
              "converged_steps": CONVERGED_STEPS, "fd_converged": fd_digits(reference),
              "converged_self_rmse": rmse(check, reference), "converged_seconds": time.perf_counter() - start,
              "threads": torch.get_num_threads(), "rows": []}
    log(f"converged ODE: FD {result['fd_converged']:.3f}, RMSE vs Heun {CONVERGED_STEPS // 2}: "
        f"{result['converged_self_rmse']:.2e} ({result['converged_seconds']:.0f} s)")
    jobs = cases(samplers, budgets)
    log(header())
    with tqdm(jobs, desc="bench rows", unit="row", leave=False) as bar:
        emit = bar.write if log is print else log  # rows above the progress bar
        for sampler, steps in bar:
            bar.set_postfix_str(f"{sampler} {steps} steps")
            row = bench_row(model, sampler, steps, fit_x, eval_x, reference, teacher, first_step, fits, seed_batches)
            result["rows"].append(row)
            emit(format_row(row, result["fd_converged"]))
    return result


COLUMNS = ("FD stock", "greedy", "final", "final+σ", "×ODE", "worst ×ODE", "RMSE stock", "greedy", "final",
           "final+σ", "rows×g final", "σ", "fit s", "time ×")


def header():
    cells = [f"{'sampler':<9}", f"{'NFE':>3}"] + [f"{c:>10}" for c in COLUMNS]
    return "| " + " | ".join(cells) + " |\n|" + "|".join("-" * (len(c) + 2) for c in cells) + "|"


def format_row(row, fd_converged):
    """The row as a Markdown table line: FD and RMSE of stock / greedy / final / final+schedule, the schedule fit's
    FD over the converged ODE's (seed 0, and the worst over its fit seeds), the final fits' network rows over the
    greedy fit's, fit seconds, time ratio; "-" for a fit the run left out."""
    def cell(name, key, spec):
        return f"{row[name][key]:>10{spec}}" if name in row else f"{'-':>10}"

    greedy_rows = row["greedy"]["network_rows"] if "greedy" in row else None
    schedule = row.get("schedule_seeds", [])
    worst = f"{max(s['fd'] for s in schedule) / fd_converged:>10.2f}" if schedule else f"{'-':>10}"
    rows_x = [f"{row[name]['network_rows'] / greedy_rows:>10.1f}" if name in row and greedy_rows else f"{'-':>10}"
              for name in ("final", "schedule")]
    cells = ([f"{row['sampler']:<9}", f"{row['nfe']:>3}"] + [cell(name, "fd", ".2f") for name in ("stock", *FITS)]
             + [f"{row['schedule']['fd'] / fd_converged:>10.2f}" if "schedule" in row else f"{'-':>10}", worst]
             + [cell(name, "rmse", ".4f") for name in ("stock", *FITS)] + rows_x
             + [cell("schedule", "fit_seconds", ".2f"),
                f"{row['time_ratio']:>10.2f}" if "time_ratio" in row else f"{'-':>10}"])
    return "| " + " | ".join(cells) + " |"
