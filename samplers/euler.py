"""D-Euler (= deterministic DDIM in σ space)."""
import torch
from tqdm.auto import trange

from .base import lambda_provider, to_d


def euler_landings(sigmas):
    """One evaluation per step, landing on σ_{i+1}."""
    return sigmas[1:]


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, lambdas=None):
    """Euler steps x_{i+1} = x_i + (σ_{i+1} − σ_i)(x_i − D~_i)/σ_i, with D~_i = D_i + λ_i (D_i − D_{i−1}).

    The correction enters with c_i = (σ_i − σ_{i+1})/σ_i. With ``lambdas=None`` this is k-diffusion's sample_euler."""
    extra_args = {} if extra_args is None else extra_args
    correct = lambda_provider(lambdas, sigmas, len(sigmas) - 1, "euler")
    s_in = x.new_ones([x.shape[0]])
    prev = x
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = to_d(x, sigmas[i], denoised)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        dt = sigmas[i + 1] - sigmas[i]
        x = correct(i, x, x + d * dt, -dt / sigmas[i], denoised, prev, sigmas[i + 1])
        prev = denoised
    return x
