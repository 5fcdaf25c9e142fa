"""Where the final fit is weaker, measured: a mode-chaotic exact GMM fitted on few latents, and a bfloat16 model.

1. An exact 16-component GMM in 256-d as a rectified-flow model (σ 1 → 0 in 5 equal steps): λ fitted to the final
   sample on 16, 64 and 256 latents, judged by RMSE to the converged ODE on 500 fresh ones.
2. The tiny digits model under CPU autocast in bfloat16 and in float16: the schedule fit at 5 steps on 16 latents
   (three draws), with its measured noise floor and without, judged as in the bench (FD ÷ the float32 model's
   converged ODE, RMSE to it).

    python -m dode.lab.benchmarks.limits              # prints both tables, writes limits.json
"""

import contextlib
import statistics
from unittest import mock

import torch

from ..protocol import autocast_model, converged, grid, noise, write_json
from ...lambdas import distill, final
from ...samplers import sample
from ..testbed import fd_digits, load_tiny_model, rmse
from ..testbed.denoisers import make_gmm
from .fit_batch import fit_batches

FLOW_GRID = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)


def gaussian_noise(batch, seed, dim=256):
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))


def flow_gmm_rows(log):
    model = make_gmm(dim=256, k=16, seed=3, flow=True)
    sigmas = torch.tensor(FLOW_GRID)
    fresh = gaussian_noise(500, 1)
    reference = sample(model, fresh, torch.linspace(1, 0, 401), "heun", disable=True)
    rows = []
    log("| sampler | fit latents | RMSE stock | RMSE final |\n|---|---|---|---|")
    for sampler in ("euler", "dpmpp_2m"):
        stock = rmse(sample(model, fresh, sigmas, sampler, flow=True, disable=True), reference)
        for batch in (16, 64, 256):
            fit = distill(model, gaussian_noise(batch, 0), sigmas, sampler, flow=True, disable=True)
            out = sample(model, fresh, sigmas, sampler, lambdas=fit.lambdas, flow=True, disable=True)
            rows.append({"sampler": sampler, "fit_batch": batch, "rmse_stock": stock, "rmse_final": rmse(out, reference)})
            log(f"| {sampler} | {batch} | {stock:.4f} | {rows[-1]['rmse_final']:.4f} |")
    return rows


def autocast_rows(log):
    """The schedule fit at 5 steps with the network in bfloat16 / float16 (CPU autocast), on 16 latents (three draws),
    with its measured noise floor and with the floor switched off (float32-sized difference steps)."""
    tiny = load_tiny_model()
    fresh = noise(2000, 1)
    reference = converged(tiny, fresh)
    fd_ode = fd_digits(reference)
    rows = []
    log("| precision | sampler | noise floor | FD ÷ ODE (each draw) | worst | RMSE median |\n|---|---|---|---|---|---|")
    for dtype in ("float32", "bfloat16", "float16"):
        model = autocast_model(tiny, dtype)
        for sampler in ("euler", "dpmpp_2m"):
            for floor in (("measured", "off") if dtype != "float32" else ("measured",)):
                off = mock.patch.object(final.FinalFit, "measure_noise", lambda self, state: 0.0)
                fds, rmses = [], []
                with off if floor == "off" else contextlib.nullcontext():
                    for x in fit_batches(16):
                        fit = distill(model, x, grid(5), sampler, schedule=True, disable=True)
                        out = sample(model, fresh, fit.sigmas.float(), sampler, lambdas=fit.lambdas, disable=True)
                        fds.append(fd_digits(out) / fd_ode)
                        rmses.append(rmse(out, reference))
                rows.append({"precision": dtype, "sampler": sampler, "noise_floor": floor, "fd_ratio": fds,
                             "rmse": rmses})
                log(f"| {dtype} | {sampler} | {floor} | {', '.join(f'{v:.2f}' for v in fds)} | {max(fds):.2f} | "
                    f"{statistics.median(rmses):.4f} |")
    return rows


def main(log=print):
    torch.set_num_threads(1)
    write_json({"flow_gmm": flow_gmm_rows(log), "autocast": autocast_rows(log)}, "limits.json")
    log("wrote limits.json")


if __name__ == "__main__":
    main()
