"""Sample-quality metrics for the testbed's models (all float64, CPU, scipy-free)."""
import functools

import torch

from .classifier import load_classifier
from .data import load_digits_tensor


def _mean_cov(feats):
    """Mean and unbiased covariance (divisor N − 1) of (N, ...) features, flattened to (N, d), float64."""
    f = feats.detach().flatten(1).to("cpu", torch.float64)
    centered = f - f.mean(0)
    return f.mean(0), centered.T @ centered / (len(f) - 1)


def _sqrt_psd(m):
    """Symmetric square root of a symmetric PSD matrix via eigh (negative eigenvalues clamped to 0)."""
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def _frechet_from_stats(mu1, cov1, mu2, cov2):
    """‖μ1 − μ2‖² + tr C1 + tr C2 − 2 tr sqrt(sqrt(C1) C2 sqrt(C1))."""
    s1 = _sqrt_psd(cov1)
    inner = s1 @ cov2 @ s1
    cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross).item()


def frechet_distance(feats_a, feats_b):
    """Fréchet distance between Gaussians fitted to two feature sets (N, d) and (M, d), in float64.

    FD = ‖μa − μb‖² + tr Ca + tr Cb − 2 tr (Ca^½ Cb Ca^½)^½ (unbiased covariances); tr (Ca Cb)^½ is computed
    through the symmetric product Ca^½ Cb Ca^½, whose square root has the same trace.
    """
    return _frechet_from_stats(*_mean_cov(feats_a), *_mean_cov(feats_b))


@functools.lru_cache(maxsize=1)
def _classifier():
    return load_classifier()


def _as_images(samples):
    """(B, 1, 8, 8)-compatible samples as float32 CPU images clamped to [-1, 1]."""
    return samples.detach().to("cpu", torch.float32).reshape(-1, 1, 8, 8).clamp(-1, 1)


@functools.lru_cache(maxsize=None)
def _reference_stats(space):
    """(μ, C) of all 1797 digits, in classifier-feature ("features") or pixel ("pixels") space."""
    images = load_digits_tensor()[0]
    feats = _classifier().features(images) if space == "features" else images
    return _mean_cov(feats)


def digits_features(samples):
    """The classifier's 128-d penultimate features of `samples` (B, 1, 8, 8), clamped to [-1, 1]."""
    with torch.no_grad():
        return _classifier().features(_as_images(samples))


def fd_digits(samples):
    """FD between the classifier's 128-d penultimate features of `samples` (B, 1, 8, 8), clamped to
    [-1, 1], and those of all 1797 digits. The noise floor (a random half vs all) is about 0.5."""
    return _frechet_from_stats(*_mean_cov(digits_features(samples)), *_reference_stats("features"))


def fd_pixels(samples):
    """FD in the 64-d pixel space between `samples` (clamped to [-1, 1]) and all 1797 digits."""
    return _frechet_from_stats(*_mean_cov(_as_images(samples)), *_reference_stats("pixels"))


@functools.lru_cache(maxsize=None)
def _random_filters(channels, count=64, seed=0):
    """`count` seeded N(0, 1) 3 × 3 filters over `channels` channels, each made zero-mean and unit-norm."""
    w = torch.randn(count, channels, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w = w - w.mean((1, 2, 3), keepdim=True)
    return w / w.flatten(1).norm(dim=1)[:, None, None, None]


def patch_features(x):
    """(B, C, H, W) → (B, 16 C + 64) float64: each channel's 4 × 4 block means (layout, colour) and the spatial
    means of ReLU of 64 fixed random zero-mean 3 × 3 filters (edge / texture energy: blur lowers it, noise raises it)."""
    x = x.detach().to("cpu", torch.float32)
    coarse = torch.nn.functional.adaptive_avg_pool2d(x.double(), 4).flatten(1)
    responses = torch.nn.functional.conv2d(x, _random_filters(x.shape[1]).float())  # float32: fast, ample here
    return torch.cat([coarse, responses.relu().mean((2, 3)).double()], dim=1)


def rmse(a, b):
    """Root mean squared error per element: sqrt( (1/B) Σ_i ‖a_i − b_i‖² / dim ), dim = numel / B.

    For equal-shape (B, ...) tensors this is sqrt(mean((a − b)²)) over all elements, in float64.
    (The D-ODE fit objective "mean squared distance", summed over dims, is dim · rmse².)
    """
    diff = (a.detach().to("cpu", torch.float64) - b.detach().to("cpu", torch.float64)).flatten(1)
    return diff.pow(2).sum(1).div(diff.shape[1]).mean().sqrt().item()
