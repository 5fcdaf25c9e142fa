"""Stub of comfy.model_base: a BaseModel with a small deterministic network as ``diffusion_model``."""
from enum import Enum

import torch

from . import model_sampling as ms


class ModelType(Enum):
    EPS = 1
    FLOW = 8


class LatentFormat:
    latent_channels = 4


class TinyNet(torch.nn.Module):
    """A well-posed, slightly non-linear denoiser: Gaussian data (mean = context, per-channel variance v) plus a
    term that vanishes at σ → 0 and σ → ∞:  D = μ + v/(v + σ²)·(x − μ) + 0.3·σ/(1 + σ²)·tanh(W x)."""

    def __init__(self, channels=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Conv2d(channels, channels, 1)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(channels, channels, 1, 1, generator=g))
            self.proj.bias.copy_(torch.randn(channels, generator=g))

    def forward(self, x, sigma, context):
        sigma = sigma.reshape(-1, 1, 1, 1)
        mu = context.reshape(-1, 1, 1, 1)
        var = (0.5 + torch.nn.functional.softplus(self.proj.bias)).reshape(1, -1, 1, 1)
        return mu + var / (var + sigma ** 2) * (x - mu) + 0.3 * sigma / (1 + sigma ** 2) * torch.tanh(self.proj(x))


class BaseModel(torch.nn.Module):
    def __init__(self, model_type=ModelType.EPS, channels=4, seed=0, shift=3.0):
        super().__init__()
        self.model_type = model_type
        self.latent_format = LatentFormat()
        self.latent_format.latent_channels = channels
        if model_type == ModelType.FLOW:
            cls = type("ModelSampling", (ms.ModelSamplingDiscreteFlow, ms.CONST), {})
            self.model_sampling = cls(shift=shift)
        else:
            cls = type("ModelSampling", (ms.ModelSamplingDiscrete, ms.EPS), {})
            self.model_sampling = cls()
        self.diffusion_model = TinyNet(channels, seed)

    def apply_model(self, x, sigma, context):
        """The network predicts eps (EPS) or velocity (CONST); both are (x − D)/σ in σ-space."""
        out = (x - self.diffusion_model(x, sigma, context)) / sigma.reshape(-1, 1, 1, 1)
        return self.model_sampling.calculate_denoised(sigma, out, x)

    def process_latent_in(self, latent):
        return latent

    def process_latent_out(self, latent):
        return latent
