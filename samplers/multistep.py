"""D-iPNDM and D-DEIS: linear multistep (Adams–Bashforth) steps on the ODE derivative d = (x − D)/σ in σ.

Both follow ComfyUI (sample_ipndm, sample_deis). A step is x_{i+1} = x_i + (σ_{i+1} − σ_i) d̄_i, with d̄_i a fixed
combination of the current and past derivatives, which are kept raw. Written as a DDIM step,
x_{i+1} = (σ_{i+1}/σ_i) x_i + (1 − σ_{i+1}/σ_i) D̄_i with the combined estimate D̄_i = x_i − σ_i d̄_i, so λ acts on
D̄ with c_i = (σ_i − σ_{i+1})/σ_i, as in the paper's D-iPNDM and D-DEIS. First-order steps correct the raw D_i.
"""
import math

import torch
from tqdm.auto import trange

from .base import lambda_provider, to_d

IPNDM_ORDER = 4
IPNDM_WEIGHTS = ((1, (1,)), (2, (3, -1)), (12, (23, -16, 5)), (24, (55, -59, 37, -9)))  # (divisor, newest first)
DEIS_ORDER = 3
DEIS_NODES = 10000
# DEIS's clock: the VP schedule ᾱ(t) = exp(−β_d t²/2 − β_min t) = 1/(1 + σ²) with σ(1e-3) = 0.002, σ(1) = 80
VP_BETA_D = 2 * (math.log1p(0.002 ** 2) / 1e-3 - math.log1p(80.0 ** 2)) / (1e-3 - 1)
VP_BETA_MIN = math.log1p(80.0 ** 2) - VP_BETA_D / 2


def ipndm_landings(sigmas):
    """One evaluation per step, landing on σ_{i+1}."""
    return sigmas[1:]


@torch.no_grad()
def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, lambdas=None):
    """iPNDM (Zhang & Chen 2023): Adams–Bashforth in σ with fixed weights, of order min(4, i + 1):

        d̄_i = d_i | (3 d_i − d_{i−1})/2 | (23 d_i − 16 d_{i−1} + 5 d_{i−2})/12
              | (55 d_i − 59 d_{i−1} + 37 d_{i−2} − 9 d_{i−3})/24,

    and a step to σ = 0 returns D_i. λ acts on D̄_i = x_i − σ_i d̄_i (raw D_i on the first and last step). With
    ``lambdas=None`` this is ComfyUI's sample_ipndm (max_order=4), except that the callback gets the current x."""
    extra_args = {} if extra_args is None else extra_args
    correct = lambda_provider(lambdas, sigmas, len(sigmas) - 1, "ipndm")
    s_in = x.new_ones([x.shape[0]])
    prev, ds = x, []
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        ds = [to_d(x, sigmas[i], denoised)] + ds[:IPNDM_ORDER - 1]
        if sigmas[i + 1] == 0:
            x = correct(i, x, denoised, 1.0, denoised, prev, sigmas[i + 1])
            continue
        divisor, weights = IPNDM_WEIGHTS[len(ds) - 1]
        total = weights[0] * ds[0]
        for weight, d in zip(weights[1:], ds[1:]):
            total = total + weight * d
        dt = sigmas[i + 1] - sigmas[i]
        out = denoised if len(ds) == 1 else x - sigmas[i] * (total / divisor)
        x = correct(i, x, x + dt * total / divisor, -dt / sigmas[i], out, prev, sigmas[i + 1])
        prev = out
    return x


def vp_time(sigma):
    """The VP time t of σ, solving β_d t²/2 + β_min t = log(1 + σ²) (ComfyUI's edm2t)."""
    return ((VP_BETA_MIN ** 2 + 2 * VP_BETA_D * torch.log1p(sigma ** 2)).sqrt() - VP_BETA_MIN) / VP_BETA_D


def deis_coefficients(sigmas, order=DEIS_ORDER, nodes=DEIS_NODES):
    """tAB-DEIS (Zhang & Chen 2023) weights per step: x_{i+1} = x_i + Σ_j c_ij d_{i−j}, j < min(order, i + 1), with

        c_ij = ∫_{t_i}^{t_{i+1}} σ'(τ) ℓ_ij(τ) dτ,   ℓ_ij the Lagrange basis on the times t_i, t_{i−1}, … of the d's,

    t the VP time of σ (vp_time) and σ'(τ) = (β_d τ + β_min) / (2 √(ᾱ (1 − ᾱ))). The integral uses ComfyUI's rule:
    ``nodes`` equispaced points from t_i to t_{i+1}, both ends included, each weighted (t_{i+1} − t_i)/nodes. Float64
    on the CPU; an empty list marks a first-order (Euler) step: the first step and a step to σ = 0."""
    t = vp_time(sigmas.detach().double().cpu())
    coefs = []
    for i in range(len(sigmas) - 1):
        k = min(order, i + 1)
        if k == 1 or sigmas[i + 1] <= 0:
            coefs.append([])
            continue
        taus = torch.linspace(float(t[i]), float(t[i + 1]), nodes, dtype=torch.float64)
        exponent = -VP_BETA_D * taus ** 2 / 2 - VP_BETA_MIN * taus   # log ᾱ(τ)
        rate = (VP_BETA_D * taus + VP_BETA_MIN) / (2 * (exponent.exp() * -exponent.expm1()).sqrt())
        weight = rate * (t[i + 1] - t[i]) / nodes
        knots = t[i - k + 1:i + 1].flip(0)
        coefs.append([float((weight * basis(knots, j, taus)).sum()) for j in range(k)])
    return coefs


def basis(knots, j, taus):
    """The Lagrange basis polynomial ℓ_j(τ) = Π_{m≠j} (τ − t_m)/(t_j − t_m) on ``knots``."""
    out = torch.ones_like(taus)
    for m, knot in enumerate(knots):
        if m != j:
            out = out * (taus - knot) / (knots[j] - knot)
    return out


def deis_landings(sigmas):
    """One evaluation per step, landing on σ_{i+1}."""
    return sigmas[1:]


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, lambdas=None):
    """DEIS, tAB of order 3: x_{i+1} = x_i + Σ_j c_ij d_{i−j} (deis_coefficients), Euler on the first step and on a
    step to σ = 0. λ acts on D̄_i = x_i − σ_i Σ_j c_ij d_{i−j}/(σ_{i+1} − σ_i) (raw D_i on Euler steps). With
    ``lambdas=None`` this is ComfyUI's sample_deis (max_order=3, deis_mode='tab') up to its float32 coefficients,
    except that the callback gets the current x."""
    extra_args = {} if extra_args is None else extra_args
    correct = lambda_provider(lambdas, sigmas, len(sigmas) - 1, "deis")
    coefs = deis_coefficients(sigmas)
    s_in = x.new_ones([x.shape[0]])
    prev, ds = x, []
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        ds = [to_d(x, sigmas[i], denoised)] + ds[:DEIS_ORDER - 1]
        dt = sigmas[i + 1] - sigmas[i]
        if coefs[i]:
            step = sum(c * d for c, d in zip(coefs[i], ds))
            x_plain, out = x + step, x - step * (sigmas[i] / dt)
        else:
            x_plain, out = x + ds[0] * dt, denoised
        x = correct(i, x, x_plain, -dt / sigmas[i], out, prev, sigmas[i + 1])
        prev = out
    return x
