"""D-Heun (the EDM second-order sampler)."""
import torch
from tqdm.auto import trange

from .base import lambda_provider, to_d


def heun_landings(sigmas):
    """Two evaluations per step (predictor and corrector, both landing on σ_{i+1}); a step to σ = 0 has one."""
    return torch.cat([sigma.repeat(1 if sigma == 0 else 2) for sigma in sigmas[1:]])


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, lambdas=None):
    """Heun steps with one λ per network evaluation.

    Predictor: x' = x_i + (σ_{i+1} − σ_i)(x_i − D~_i)/σ_i; its λ only moves the corrector's evaluation point.
    Corrector: x_{i+1} = x_i + (σ_{i+1} − σ_i)(d_i + (x' − D'~)/σ_{i+1})/2 with D'~ = D' + λ (D' − D_i), so
    c = (σ_i − σ_{i+1})/(2σ_{i+1}). A step to σ = 0 is a single Euler step, as in EDM and k-diffusion.
    With ``lambdas=None`` this is k-diffusion's sample_heun."""
    extra_args = {} if extra_args is None else extra_args
    correct = lambda_provider(lambdas, sigmas, len(heun_landings(sigmas)), "heun")
    s_in = x.new_ones([x.shape[0]])
    prev = x
    n = 0
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        dt = sigmas[i + 1] - sigmas[i]
        x_2 = correct(n, x, x + d * dt, -dt / sigmas[i], denoised, prev, sigmas[i + 1])
        n += 1
        if sigmas[i + 1] == 0:
            x, prev = x_2, denoised
            continue
        denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
        d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
        d_prime = (d + d_2) / 2
        x = correct(n, x, x + d_prime * dt, -dt / (2 * sigmas[i + 1]), denoised_2, denoised, sigmas[i + 1])
        n += 1
        prev = denoised_2
    return x
