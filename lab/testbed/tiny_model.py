"""A tiny EDM-preconditioned MLP denoiser for the 8x8 digits (330,176 parameters), and its generalisation.

D(x, σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ)) with σ_data = 0.5 (Karras et al. 2022):
c_skip = σd² / (σ² + σd²), c_out = σ σd / sqrt(σ² + σd²), c_in = 1 / sqrt(σ² + σd²), c_noise = ln(σ) / 4.
F is an MLP on the 64 pixels: a sinusoidal embedding of c_noise, residual blocks of
LayerNorm + adaLN scale/shift + Linear(w, 2w) + SiLU + Linear(2w, w), then LayerNorm + Linear(w, 64).
TinyEDM(pixels, sigma_data=..., classes=K, spectral=(C, H, W)) is the same network on any flattened shape,
optionally with a class embedding (K classes plus a null class K, used when ``labels`` is None) added to the
noise embedding, and a SpectralGain path added to F (a width-w MLP's output has rank ≤ w, too few to shrink
the noise in every direction of a 768-d patch).
"""
import math
import os

import torch
from safetensors.torch import load_file
from torch import nn

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
SIGMA_DATA = 0.5
WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "tiny_edm_digits.safetensors")


class FourierEmbedding(nn.Module):
    """[cos(f_i t), sin(f_i t)] for `dim`/2 fixed frequencies f_i log-spaced over [0.5, 64]."""

    def __init__(self, dim):
        super().__init__()
        freqs = torch.exp(torch.linspace(math.log(0.5), math.log(64.0), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t):
        angles = t[:, None] * self.freqs.to(t)
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class AdaLNBlock(nn.Module):
    """h + MLP(LayerNorm(h) (1 + scale) + shift), with (scale, shift) = Linear(emb)."""

    def __init__(self, width, emb_dim):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.modulation = nn.Linear(emb_dim, 2 * width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        for p in (self.modulation.weight, self.modulation.bias, self.fc2.weight, self.fc2.bias):
            nn.init.zeros_(p)

    def forward(self, h, emb):
        scale, shift = self.modulation(emb).chunk(2, dim=1)
        z = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(nn.functional.silu(self.fc1(z)))


def dct_matrix(n):
    """Orthonormal DCT-II matrix (n, n): row k is sqrt(2 / n) c_k cos(π (i + ½) k / n), c_0 = 1 / √2, c_k = 1."""
    k, i = torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n, dtype=torch.float64)[None, :]
    m = math.sqrt(2.0 / n) * torch.cos(math.pi * (i + 0.5) * k / n)
    m[0] /= math.sqrt(2.0)
    return m.float()


class SpectralGain(nn.Module):
    """A σ-dependent diagonal filter in the per-channel 2-D DCT basis: DCTᵀ (g(emb) ⊙ DCT x), g = Linear(emb)."""

    def __init__(self, shape, emb_dim):
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer("dct_h", dct_matrix(self.shape[1]), persistent=False)
        self.register_buffer("dct_w", dct_matrix(self.shape[2]), persistent=False)
        self.gain = nn.Linear(emb_dim, math.prod(self.shape))
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.gain.bias)

    def forward(self, x_flat, emb):
        dct_h, dct_w = self.dct_h.to(x_flat), self.dct_w.to(x_flat)
        coef = dct_h @ x_flat.view(-1, *self.shape) @ dct_w.T
        coef = coef * self.gain(emb).view_as(coef)
        return (dct_h.T @ coef @ dct_w).flatten(1)


class TinyEDM(nn.Module):
    """EDM denoiser for (B, ...) inputs of `pixels` elements: ``forward(x, sigma, labels=None) -> x0``."""

    def __init__(self, pixels=64, width=128, blocks=3, emb_dim=128, sigma_data=SIGMA_DATA, classes=0, spectral=None):
        super().__init__()
        self.sigma_data, self.classes = sigma_data, classes
        if classes:
            self.class_embed = nn.Embedding(classes + 1, emb_dim)
        self.spectral = SpectralGain(spectral, emb_dim) if spectral else None
        self.embed = FourierEmbedding(emb_dim)
        self.embed_proj = nn.Linear(emb_dim, emb_dim)
        self.inp = nn.Linear(pixels, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width, emb_dim) for _ in range(blocks))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, pixels)

    def raw(self, x_in, c_noise, labels=None):
        """The network F on flattened inputs (B, pixels), c_noise (B,) and class labels (B,) or None."""
        emb = self.embed_proj(self.embed(c_noise))
        if self.classes:
            emb = emb + self.class_embed(self._labels(labels, len(x_in), x_in.device))
        emb = nn.functional.silu(emb)
        h = self.inp(x_in)
        for block in self.blocks:
            h = block(h, emb)
        out = self.out(self.out_norm(h))
        return out if self.spectral is None else out + self.spectral(x_in, emb)

    def _labels(self, labels, batch, device):
        """`labels` as a (batch,) long tensor; None means the null class (index `classes`)."""
        if labels is None:
            return torch.full((batch,), self.classes, dtype=torch.long, device=device)
        return torch.as_tensor(labels, device=device).long().reshape(-1).expand(batch)

    def forward(self, x, sigma, labels=None, **kwargs):
        flat = x.flatten(1)
        sigma = torch.as_tensor(sigma, dtype=flat.dtype, device=flat.device).reshape(-1).expand(flat.shape[0])
        c_skip, c_out, c_in = edm_scalings(sigma[:, None], self.sigma_data)
        out = c_skip * flat + c_out * self.raw(c_in * flat, sigma.log() / 4, labels)
        return out.view_as(x)


def edm_scalings(sigma, sigma_data=SIGMA_DATA):
    """EDM (c_skip, c_out, c_in) for σ (any shape)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt()


def load_weights(model, path, dtype=torch.float32):
    """`model` with the (fp16) safetensors state dict at `path`, cast to `dtype`, in eval mode, gradients off."""
    model.load_state_dict({k: v.to(dtype) for k, v in load_file(path).items()})
    return model.to(dtype).eval().requires_grad_(False)


def load_tiny_model(dtype=torch.float32, path=WEIGHTS_PATH):
    """The shipped TinyEDM (fp16 safetensors, cast to `dtype`) in eval mode, gradients off."""
    return load_weights(TinyEDM(), path, dtype)
