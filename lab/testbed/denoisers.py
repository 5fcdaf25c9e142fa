"""Exact denoisers (posterior means) following the k-diffusion contract ``model(x, sigma_vec) -> x0``.

Both handle two noising conventions, written as ``x = α(σ) x0 + σ ε``:
  * VE / EDM / k-diffusion (``flow=False``): α = 1, σ > 0.
  * rectified flow (``flow=True``): α = 1 − σ, σ ∈ (0, 1]. Equivalently x/(1−σ) is a VE sample at
    σ/(1−σ); writing the posterior directly in (α, σ) keeps σ = 1 finite (there D is the prior mean).
``x`` may have any shape (B, ...); it is flattened to (B, d) and the result reshaped back.
"""
import torch
from torch import nn

from .data import load_digits_tensor


def _as_float(t):
    """`t` as a tensor, keeping a floating dtype and making anything else float32."""
    t = torch.as_tensor(t)
    return t if t.is_floating_point() else t.float()


def _sigma_column(sigma, x):
    """σ as a (B, 1) (or (1, 1) for a scalar) column in x's dtype and device."""
    return torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1)


def _alpha(sigma, flow):
    """Signal scale α(σ): 1 − σ for rectified flow, 1 for VE."""
    return 1.0 - sigma if flow else torch.ones_like(sigma)


class GaussianMixtureDenoiser(nn.Module):
    """Exact E[x0 | x] for x0 ~ Σ_k w_k N(μ_k, s_k² I) and x = α x0 + σ ε.

    With v_k = α² s_k² + σ²: log r_k = log w_k − (d/2) log v_k − ‖x − α μ_k‖² / (2 v_k) + const,
    r = softmax(log r), and D = Σ_k r_k [μ_k + (α s_k² / v_k)(x − α μ_k)].
    """

    def __init__(self, means, stds, weights, flow=False):
        super().__init__()
        means, weights = _as_float(means), torch.as_tensor(weights, dtype=torch.float64)
        self.register_buffer("means", means)                                                  # (K, d)
        self.register_buffer("variances", _as_float(stds).to(means) ** 2)                     # (K,)
        self.register_buffer("log_weights", (weights / weights.sum()).log().to(means))        # (K,)
        self.flow = flow

    def forward(self, x, sigma, **kwargs):
        flat = x.flatten(1)
        mu, s2, log_w = (t.to(flat) for t in (self.means, self.variances, self.log_weights))
        sigma = _sigma_column(sigma, flat)
        alpha = _alpha(sigma, self.flow)
        var = alpha**2 * s2 + sigma**2                                    # (B, K)
        diff = flat[:, None, :] - alpha[:, :, None] * mu                  # (B, K, d): x − α μ_k
        log_r = log_w - 0.5 * flat.shape[1] * var.log() - diff.pow(2).sum(-1) / (2 * var)
        r = log_r.softmax(-1)
        gain = alpha * s2 / var
        return (r[..., None] * (mu + gain[..., None] * diff)).sum(1).view_as(x)


def make_gmm(dim=64, k=8, seed=0, flow=False):
    """A random GMM: μ_k ~ N(0, I_dim), s_k ~ U[0.1, 0.5], w_k ∝ U[0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g)
    stds = 0.1 + 0.4 * torch.rand(k, generator=g)
    weights = 0.5 + torch.rand(k, generator=g)
    return GaussianMixtureDenoiser(means, stds, weights, flow=flow)


class EmpiricalDenoiser(nn.Module):
    """Exact E[x0 | x] for x0 uniform on the points y_j (rows of Y) and x = α x0 + σ ε, σ > 0.

    D = softmax_j(−‖x − α y_j‖² / 2σ²) Y = softmax_j((α x·y_j − α² ‖y_j‖² / 2) / σ²) Y
    (‖x‖² cancels in the softmax): one matmul for the logits, one for the mean.
    """

    def __init__(self, points, flow=False):
        super().__init__()
        points = _as_float(points).flatten(1)
        self.register_buffer("points", points)                            # (N, d)
        self.register_buffer("half_sq_norms", 0.5 * points.pow(2).sum(1))  # (N,)
        self.flow = flow

    def forward(self, x, sigma, **kwargs):
        flat = x.flatten(1)
        y, half_sq = self.points.to(flat), self.half_sq_norms.to(flat)
        sigma = _sigma_column(sigma, flat)
        alpha = _alpha(sigma, self.flow)
        logits = (alpha * (flat @ y.T) - alpha**2 * half_sq) / sigma**2   # (B, N)
        return (logits.softmax(-1) @ y).view_as(x)


def digits_empirical(flow=False):
    """The empirical denoiser of the 1797 shipped digits (64-d, in [-1, 1])."""
    return EmpiricalDenoiser(load_digits_tensor()[0], flow=flow)
