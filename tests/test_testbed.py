import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from dode.lab.testbed import (
    EmpiricalDenoiser, GaussianMixtureDenoiser, digits_empirical, fd_digits, fd_pixels, frechet_distance,
    load_classifier, load_digits_tensor, load_tiny_model, make_gmm, rmse, split_indices,
)
from dode.lab.testbed.lab_models import LAB_MODELS, NULL_LABEL, load_lab_model, reference_data
from dode.lab.testbed.patches import VAL_COLUMNS, from_latent, latent_map, load_photos, patch_set, to_latent

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


def test_photos_and_patches_load():
    photos = load_photos()
    assert photos.shape == (2, 3, 213, 320) and photos.dtype == torch.float32
    assert photos.min() >= -1 and photos.max() <= 1
    a, b = patch_set(64, "val", seed=3), patch_set(64, "val", seed=3)
    assert a.shape == (64, 3, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a, patch_set(64, "val", seed=4))
    # every val patch lies inside the held-out right-most columns of its photo
    held_out = photos[..., -VAL_COLUMNS:].unfold(2, 16, 1).unfold(3, 16, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 768)
    distances = torch.cdist(a.flatten(1), held_out, compute_mode="donot_use_mm_for_euclid_dist")
    assert (distances.min(1).values < 1e-6).all()


def test_latent_map_is_orthonormal_and_unit_scale():
    w = latent_map()
    torch.testing.assert_close(w.T @ w, torch.eye(4), atol=1e-6, rtol=0)
    rgb = patch_set(512, "train", seed=0)
    latent = to_latent(rgb)
    assert latent.shape == (512, 4, 8, 8) and 0.8 < latent.std() < 1.2
    torch.testing.assert_close(to_latent(from_latent(latent)), latent, atol=1e-5, rtol=0)


def denoising_case(name, n=32):
    """(clean, labels) from a lab model's own data: digits with their labels, or reference patches."""
    if name.startswith("digits"):
        images, labels = load_digits_tensor()
        return images[:n], labels[:n]
    return reference_data(name)[:n], None


@pytest.mark.parametrize("name", LAB_MODELS)
def test_lab_model_loads_is_deterministic_and_denoises(name):
    model = load_lab_model(name, cfg=1)  # digits_cfg: the conditional denoiser (a guided D is no posterior mean)
    clean, labels = denoising_case(name)
    assert tuple(clean.shape[1:]) == model.shape and (model.sigma_min, model.sigma_max) == (0.002, 80.0)
    extra = {"labels": labels} if labels is not None else model.extra_args(len(clean), seed=0)
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))  # σ = 1
    out = model.denoiser(noisy, torch.ones(len(clean)), **extra)
    assert out.shape == clean.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, load_lab_model(name, cfg=1).denoiser(noisy, torch.ones(len(clean)), **extra))
    assert rmse(out, clean) < 0.5 * rmse(torch.zeros_like(clean), clean)


def test_cfg_wrapper_is_conditional_at_one_and_slices_by_row():
    guided, plain = load_lab_model("digits_cfg", cfg=6), load_lab_model("digits_cfg", cfg=1)
    net = plain.denoiser.model
    x, labels = plain.noise(8, seed=1) / 16, plain.extra_args(8, seed=1)["labels"]
    sigma = torch.linspace(0.1, 5.0, 8)
    torch.testing.assert_close(plain.denoiser(x, sigma, labels=labels), net(x, sigma, labels=labels), atol=0, rtol=0)
    cond, uncond = net(x, sigma, labels=labels), net(x, sigma, labels=torch.full_like(labels, NULL_LABEL))
    full = guided.denoiser(x, sigma, labels=labels)
    torch.testing.assert_close(full, uncond + 6 * (cond - uncond), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided.denoiser(x[2:5], sigma[2:5], labels=labels[2:5]), full[2:5], atol=1e-5, rtol=1e-5)
    assert guided.cfg == 6.0 and guided.denoiser.scale == 6.0


def test_lab_model_noise_and_extra_args():
    model = load_lab_model("digits_cfg")
    noise = model.noise(4000, seed=2)
    assert noise.shape == (4000, 1, 8, 8) and abs(noise.std().item() / 80.0 - 1) < 0.02
    assert torch.equal(noise, model.noise(4000, seed=2)) and not torch.equal(noise, model.noise(4000, seed=3))
    labels = model.extra_args(4000, seed=2)["labels"]
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    assert torch.equal(labels, model.extra_args(4000, seed=2)["labels"])
    assert torch.equal(model.extra_args(5, seed=0, label=3)["labels"], torch.full((5,), 3))
    rgb = load_lab_model("rgb")
    assert rgb.extra_args(5, seed=0) == {} and rgb.noise(2, seed=0).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError):
        rgb.extra_args(5, seed=0, label=3)


@pytest.mark.parametrize("name", ["rgb", "latent"])
def test_patch_fd_small_on_data_large_on_noise(name):
    model = load_lab_model(name)
    held_out = patch_set(1024, "val", seed=5)
    held_out = to_latent(held_out) if name == "latent" else held_out
    assert model.fd(reference_data(name)[:1024]) < 5 and model.fd(held_out) < 60  # held-out columns: about 30
    noise = torch.randn((1024, *model.shape), generator=torch.Generator().manual_seed(0)) * 0.5
    assert model.fd(noise) > 100  # about 640 (rgb) and 150 (latent)
    assert model.fd(held_out, reference=held_out) == pytest.approx(0.0, abs=1e-6)


def test_digits_lab_fd_is_fd_digits():
    images, labels = load_digits_tensor()
    model = load_lab_model("digits_cfg")
    assert model.fd(images[:500]) == pytest.approx(fd_digits(images[:500]), rel=1e-9)
    assert model.fd(images[labels == 3], label=3) < 1e-6 < model.fd(images[labels == 4], label=3)
