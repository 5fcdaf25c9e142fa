"""Where the final fit is weaker, measured: a mode-chaotic exact GMM fitted on few latents, and a bfloat16 model.

1. An exact 16-component GMM in 256-d as a rectified-flow model (σ 1 → 0 in 5 equal steps): λ fitted to the final
   sample on 16, 64 and 256 latents, judged by RMSE to the converged ODE on 500 fresh ones.
2. The tiny digits model under CPU autocast in bfloat16 and in float16: the schedule fit at 5 steps, judged as in
   the bench (FD, RMSE to the float32 model's converged ODE).

    python -m dode.benchmarks.limits              # prints both tables, writes limits.json
"""

import torch

from ..bench import converged, grid, noise, write_json
from ..lambdas import distill
from ..samplers import sample
from ..testbed import fd_digits, load_tiny_model, rmse
from ..testbed.denoisers import make_gmm

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
    tiny = load_tiny_model()
    fresh = noise(2000, 1)
    reference = converged(tiny, fresh)
    rows = []
    log("| precision | sampler | FD stock | FD final+σ | RMSE final+σ |\n|---|---|---|---|---|")
    for name, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        def model(x, sigma, dtype=dtype):
            with torch.autocast("cpu", dtype=dtype):
                return tiny(x, sigma).float()

        for sampler in ("euler", "dpmpp_2m"):
            sigmas = grid(5)
            stock = fd_digits(sample(model, fresh, sigmas, sampler, disable=True))
            fit = distill(model, noise(256, 0), sigmas, sampler, schedule=True, disable=True)
            out = sample(model, fresh, fit.sigmas.to(sigmas.dtype), sampler, lambdas=fit.lambdas, disable=True)
            rows.append({"precision": name, "sampler": sampler, "fd_stock": stock, "fd_schedule": fd_digits(out),
                         "rmse_schedule": rmse(out, reference)})
            log(f"| {name} | {sampler} | {stock:.2f} | {rows[-1]['fd_schedule']:.2f} | {rows[-1]['rmse_schedule']:.4f} |")
    return rows


def main(log=print):
    torch.set_num_threads(1)
    write_json({"flow_gmm": flow_gmm_rows(log), "autocast": autocast_rows(log)}, "limits.json")
    log("wrote limits.json")


if __name__ == "__main__":
    main()
