import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from dode.testbed import (
    EmpiricalDenoiser, GaussianMixtureDenoiser, digits_empirical, fd_digits, fd_pixels, frechet_distance,
    load_classifier, load_digits_tensor, load_tiny_model, make_gmm, rmse, split_indices,
)

torch.set_num_threads(1)

VE_SIGMAS = [0.05, 0.5, 5.0]
FLOW_SIGMAS = [0.05, 0.5, 0.95]


def mixture_log_density(x, weights, means, stds, sigma, flow):
    """log p_σ(x) for x = α x0 + σ ε, x0 ~ Σ_k w_k N(μ_k, s_k² I), via torch.distributions."""
    alpha = 1 - sigma if flow else 1.0
    scale = (alpha**2 * stds**2 + sigma**2).sqrt()[:, None].expand_as(means)
    comps = Independent(Normal(alpha * means, scale), 1)
    return MixtureSameFamily(Categorical(probs=weights), comps).log_prob(x)


def tweedie(x, log_density, sigma, flow):
    """E[x0 | x] = (x + σ² ∇ log p_σ(x)) / α."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(log_density(x).sum(), x)
    return (x + sigma**2 * grad).detach() / (1 - sigma if flow else 1.0)


def noisy_inputs(means, sigma, flow, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = means[torch.randint(len(means), (n,), generator=g)] + 0.3 * torch.randn(n, means.shape[1], generator=g, dtype=means.dtype)
    alpha = 1 - sigma if flow else 1.0
    return alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=x0.dtype)


@pytest.mark.parametrize("flow,sigma", [(False, s) for s in VE_SIGMAS] + [(True, s) for s in FLOW_SIGMAS])
def test_gmm_denoiser_matches_tweedie(flow, sigma):
    g = torch.Generator().manual_seed(1)
    means = torch.randn(5, 16, generator=g, dtype=torch.float64)
    stds = 0.1 + 0.4 * torch.rand(5, generator=g, dtype=torch.float64)
    weights = torch.tensor([0.1, 0.3, 0.2, 0.25, 0.15], dtype=torch.float64)
    model = GaussianMixtureDenoiser(means, stds, weights, flow=flow)
    x = noisy_inputs(means, sigma, flow)
    expected = tweedie(x, lambda y: mixture_log_density(y, weights, means, stds, sigma, flow), sigma, flow)
    got = model(x, torch.full((len(x),), sigma, dtype=torch.float64))
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("flow,sigma", [(False, s) for s in VE_SIGMAS] + [(True, s) for s in FLOW_SIGMAS])
def test_empirical_denoiser_matches_tweedie(flow, sigma):
    points = load_digits_tensor()[0][:200].flatten(1).double()
    model = EmpiricalDenoiser(points, flow=flow)
    x = noisy_inputs(points, sigma, flow)
    weights = torch.full((len(points),), 1 / len(points), dtype=torch.float64)
    zeros = torch.zeros(len(points), dtype=torch.float64)
    expected = tweedie(x, lambda y: mixture_log_density(y, weights, points, zeros, sigma, flow), sigma, flow)
    got = model(x, torch.full((len(x),), sigma, dtype=torch.float64))
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("factory", [make_gmm, digits_empirical])
def test_flow_is_rescaled_ve_and_prior_mean_at_one(factory):
    ve, flow = factory(), factory(flow=True)
    x = torch.randn(6, 1, 8, 8)
    s = torch.tensor([0.02, 0.1, 0.3, 0.5, 0.7, 0.9])
    ve_out = ve(x / (1 - s)[:, None, None, None], s / (1 - s))
    torch.testing.assert_close(flow(x, s), ve_out, atol=1e-4, rtol=1e-4)
    at_one = flow(x, torch.ones(6))
    prior_mean = (ve.log_weights.exp() @ ve.means) if isinstance(ve, GaussianMixtureDenoiser) else ve.points.mean(0)
    assert at_one.shape == x.shape and torch.isfinite(at_one).all()
    torch.testing.assert_close(at_one.flatten(1), prior_mean.expand(6, -1), atol=1e-5, rtol=1e-5)


def test_tiny_model_loads_and_denoises():
    model = load_tiny_model()
    assert sum(p.numel() for p in model.parameters()) == 330_176
    images = load_digits_tensor()[0][:64]
    sigma = torch.tensor([0.002, 0.5, 80.0]).repeat_interleave(torch.tensor([21, 22, 21]))
    noisy = images + sigma[:, None, None, None] * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    out = model(noisy, sigma)
    assert out.shape == images.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    mid = slice(21, 43)
    assert rmse(out[mid], images[mid]) < 0.5 * rmse(noisy[mid], images[mid])
    assert load_tiny_model(torch.float64)(noisy.double(), sigma.double()).dtype == torch.float64


def test_classifier_held_out_accuracy():
    images, labels = load_digits_tensor()
    _, val_idx = split_indices(len(images), val_fraction=0.2, seed=0)
    predictions = load_classifier()(images[val_idx]).argmax(1)
    assert (predictions == labels[val_idx]).float().mean() > 0.95


def test_fd_real_digits_small_noise_large():
    images = load_digits_tensor()[0]
    half = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[: len(images) // 2]]
    noise = torch.rand(1000, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert fd_digits(half) < 1.5 and fd_pixels(half) < 0.2  # noise floor: about 0.7 and 0.08
    assert fd_digits(noise) > 100 and fd_pixels(noise) > 20  # about 435 and 40


def test_frechet_distance_and_rmse_definitions():
    a = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    shift = torch.arange(8.0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + shift) == pytest.approx(shift.pow(2).sum().item(), rel=1e-9)
    # b = 2a: μ_b = 2μ_a, C_b = 4C_a, so FD = |μ_a|² + Tr(C_a + 4C_a − 2 (4C_a²)^½) = |μ_a|² + Tr(C_a)
    mean, cov = a.double().mean(0), torch.cov(a.double().T)
    assert frechet_distance(a, 2 * a) == pytest.approx((mean.square().sum() + cov.trace()).item(), rel=1e-6)
    b = torch.zeros(3, 1, 8, 8)
    assert rmse(b, b + 0.5) == pytest.approx(0.5)
    assert rmse(b, b.index_fill(0, torch.tensor([0]), 3.0)) == pytest.approx(math.sqrt(3.0))
