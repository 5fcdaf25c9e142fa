"""D-DPM-Solver++ samplers (data prediction, exponential integrators in t = −log σ)."""
import torch
from tqdm.auto import trange

from .base import lambda_provider


def sigma_fn(t):
    return t.neg().exp()


def t_fn(sigma):
    return sigma.log().neg()


def dpmpp_2m_landings(sigmas):
    """One evaluation per step, landing on σ_{i+1}."""
    return sigmas[1:]


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, lambdas=None):
    """DPM-Solver++(2M): x_{i+1} = (σ_{i+1}/σ_i) x_i − expm1(−h) D̄_i, D̄_i = (1 + 1/2r) D_i − (1/2r) D_{i−1}.

    λ acts on the combined estimate, D̄~_i = D̄_i + λ_i (D̄_i − D̄_{i−1}), so c_i = −expm1(−h); the multistep
    history keeps the raw D. With ``lambdas=None`` this is k-diffusion's sample_dpmpp_2m."""
    extra_args = {} if extra_args is None else extra_args
    correct = lambda_provider(lambdas, sigmas, len(sigmas) - 1, "dpmpp_2m")
    s_in = x.new_ones([x.shape[0]])
    prev = x
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            combined = denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            combined = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x_plain = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * combined
        x = correct(i, x_plain, -(-h).expm1(), combined, prev, sigmas[i + 1])
        prev, old_denoised = combined, denoised
    return x
