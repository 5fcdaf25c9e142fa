"""The schedule fit on every lab model, in float32 and half precision, fitted on 256, 16 and 4 latents.

For each lab model (lab/testbed/lab_models.py: the digits, class-conditional digits under CFG, RGB photo patches and
their 4-channel latents), each precision (the network under CPU autocast, the sampler in float32) and each case, the
schedule fit (``dode.distill(..., schedule=True)``) is made on independent fit batches — FIT_DRAWS per size — and
judged on fresh noise: FD in the model's features over the converged float32 ODE's FD on the same noise. The
class-conditional model's 4-latent batches are one class (a batch of one prompt); every other batch, and the
fresh noise, draws its classes at random.

    python -m dode.lab.benchmarks.models                       # every model, float32 and bfloat16; writes models.json
    python -m dode.lab.benchmarks.models --models rgb --dtypes float32 float16
"""
import argparse
import statistics

import torch
from tqdm.auto import tqdm

from ..protocol import DTYPES, autocast_model, write_json
from ...lambdas import distill
from ...samplers import karras_sigmas, sample
from ..testbed.lab_models import LAB_MODELS, load_lab_model

CASES = (("euler", 5), ("dpmpp_2m", 5), ("euler", 4))
FIT_DRAWS = {256: 1, 16: 3, 4: 5}
CFG = 6.0  # the class-conditional model's guidance scale: the hardest of the 1–6 users run
EVAL_BATCH = 1000
CONVERGED_STEPS = 400


def draws(lab, size):
    """The fit batches of one size: (noise, extra_args) for seeds 10, 11, … (one class, cycling, for 4 latents)."""
    out = []
    for k in range(FIT_DRAWS[size]):
        label = k % lab.classes if lab.classes and size <= 4 else None
        out.append((lab.noise(size, 10 + k), lab.extra_args(size, 10 + k, label=label)))
    return out


def model_rows(name, dtypes, cases, log):
    lab = load_lab_model(name, cfg=CFG)
    eval_x, eval_args = lab.noise(EVAL_BATCH, 1), lab.extra_args(EVAL_BATCH, 1)
    reference = sample(lab.denoiser, eval_x, karras_sigmas(CONVERGED_STEPS, lab.sigma_min, lab.sigma_max), "heun",
                       extra_args=eval_args, disable=True)
    fd_ode = lab.fd(reference)
    rows = []
    for dtype in dtypes:
        model = autocast_model(lab.denoiser, dtype)
        for sampler, steps in cases:
            sigmas = karras_sigmas(steps, lab.sigma_min, lab.sigma_max)
            stock = sample(model, eval_x, sigmas, sampler, extra_args=eval_args, disable=True)
            row = {"model": name, "dtype": dtype, "sampler": sampler, "steps": steps, "fd_ode": fd_ode,
                   "stock": lab.fd(stock) / fd_ode, "fits": {}}
            for size in FIT_DRAWS:
                ratios, rows_used = [], []
                for x, extra in draws(lab, size):
                    fit = distill(model, x, sigmas, sampler, extra_args=extra, schedule=True, disable=True,
                                  sigma_range=(lab.sigma_min, lab.sigma_max))
                    out = sample(model, eval_x, fit.sigmas.float(), sampler, lambdas=fit.lambdas,
                                 extra_args=eval_args, disable=True)
                    ratios.append(lab.fd(out) / fd_ode)
                    rows_used.append(fit.report.network_rows)
                row["fits"][size] = {"fd": ratios, "median": statistics.median(ratios), "worst": max(ratios),
                                     "network_rows": rows_used}
            rows.append(row)
            log(format_row(row))
    return rows


def format_row(row):
    cells = [row["model"], row["dtype"], f"{row['sampler']} {row['steps']}", f"{row['stock']:.2f}"]
    for size, fit in row["fits"].items():
        cells.append(f"{fit['median']:.2f} / {fit['worst']:.2f}" if len(fit["fd"]) > 1 else f"{fit['median']:.2f}")
    return "| " + " | ".join(cells) + " |"


def main():
    parser = argparse.ArgumentParser(prog="python -m dode.lab.benchmarks.models", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(LAB_MODELS), choices=LAB_MODELS)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=list(DTYPES))
    parser.add_argument("--json", default="models.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("FD ÷ converged ODE on fresh noise; fits: median / worst over the draws\n"
          "| model | precision | case | stock | 256 latents | 16 latents (3) | 4 latents (5) |\n|---|---|---|---|---|---|---|")
    rows = []
    for name in tqdm(args.models, desc="models", leave=False):
        rows += model_rows(name, args.dtypes, CASES, tqdm.write)
    write_json({"cfg": CFG, "eval_batch": EVAL_BATCH, "fit_draws": FIT_DRAWS, "rows": rows}, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
