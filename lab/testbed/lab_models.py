"""The lab's learned test models behind one API: ``LAB_MODELS`` and ``load_lab_model(name, **options)``.

  digits      the tiny digits EDM (1, 8, 8), σ_data 0.5; FD in the digits classifier's features
  digits_cfg  class-conditional digits (1, 8, 8) under classifier-free guidance (``cfg``); same FD
  rgb         3 × 16 × 16 patches of two natural photos, σ_data 0.5; FD in standardised patch_features
  latent      their 4 × 8 × 8 latents (patches.to_latent, std ≈ 1), σ_data 1.0; FD in standardised patch_features
Every denoiser follows ``model(x, sigma, **extra_args) -> D`` (float32); digits_cfg needs extra_args {"labels": (B,)}.
"""
import dataclasses
import functools
import os
from typing import Callable

import torch
from torch import nn

from .data import load_digits_tensor
from .metrics import _frechet_from_stats, _mean_cov, digits_features, patch_features
from .patches import patch_set, to_latent
from .tiny_model import SIGMA_MAX, SIGMA_MIN, TinyEDM, load_tiny_model, load_weights

_WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
LAB_MODELS = ("digits", "digits_cfg", "rgb", "latent")
NULL_LABEL = 10
DEFAULT_CFG = 3.0
REFERENCE_PATCHES = 2048
ARCHS = {
    "digits_cfg": {"pixels": 64, "classes": 10},
    "rgb": {"pixels": 768, "spectral": (3, 16, 16)},
    "latent": {"pixels": 256, "sigma_data": 1.0, "spectral": (4, 8, 8)},
}
WEIGHTS = {name: os.path.join(_WEIGHTS_DIR, f"tiny_edm_{name}.safetensors") for name in ARCHS}
SHAPES = {"digits": (1, 8, 8), "digits_cfg": (1, 8, 8), "rgb": (3, 16, 16), "latent": (4, 8, 8)}


class CFGDenoiser(nn.Module):
    """Classifier-free guidance D = D_u + s (D_c − D_u) of a class-conditional TinyEDM: ``forward(x, sigma, labels)``.

    D_c (the labels) and D_u (the null class) come from one call on the doubled batch; at s = 1 it returns D_c alone.
    """

    def __init__(self, model, scale=DEFAULT_CFG):
        super().__init__()
        self.model, self.scale = model, float(scale)

    def forward(self, x, sigma, labels, **kwargs):
        labels = torch.as_tensor(labels, device=x.device).long().reshape(-1).expand(len(x))
        if self.scale == 1.0:
            return self.model(x, sigma, labels=labels)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(len(x))
        both = self.model(torch.cat([x, x]), torch.cat([sigma, sigma]),
                          labels=torch.cat([labels, torch.full_like(labels, NULL_LABEL)]))
        cond, uncond = both.chunk(2)
        return uncond + self.scale * (cond - uncond)


@functools.lru_cache(maxsize=None)
def reference_data(name, label=None):
    """The data a model's FD compares with: all 1797 digits (or one class's), or REFERENCE_PATCHES fixed patches
    (all columns of both photos, seed 100; as latents for "latent")."""
    if name in ("digits", "digits_cfg"):
        images, labels = load_digits_tensor()
        return images if label is None else images[labels == label]
    if label is not None:
        raise ValueError(f"{name} has no classes: its FD takes no label")
    patches = patch_set(REFERENCE_PATCHES, "all", seed=100)
    return to_latent(patches) if name == "latent" else patches


@functools.lru_cache(maxsize=None)
def _reference_patch_features(name):
    """patch_features of a patch model's reference data (unscaled)."""
    return patch_features(reference_data(name))


def embed(name, samples):
    """A model's FD features: the digits classifier's (digits models), else patch_features divided by their std
    over the reference patches (so block means and texture energies weigh alike)."""
    if name in ("digits", "digits_cfg"):
        return digits_features(samples)
    return patch_features(samples) / _reference_patch_features(name).std(0)


@functools.lru_cache(maxsize=None)
def _reference_stats(name, label=None):
    """(μ, C) of the reference data's FD features."""
    if name in ("digits", "digits_cfg"):
        return _mean_cov(digits_features(reference_data(name, label)))
    reference_data(name, label)  # refuses a label
    feats = _reference_patch_features(name)
    return _mean_cov(feats / feats.std(0))


@dataclasses.dataclass
class LabModel:
    """One lab model: its denoiser and the shape, σ range, inputs and metric a benchmark needs around it."""

    name: str
    denoiser: Callable
    shape: tuple
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    sigma_data: float = 0.5
    classes: int = 0
    cfg: float = None

    def noise(self, batch, seed=0):
        """σ_max · ε with ε ~ N(0, I) of shape (batch, *shape), float32, from a generator seeded with `seed`."""
        g = torch.Generator().manual_seed(seed)
        return self.sigma_max * torch.randn((batch, *self.shape), generator=g)

    def extra_args(self, batch, seed=0, label=None):
        """{"labels": (batch,) int64} for a class-conditional model (seeded uniform over the classes, or all
        `label`); {} otherwise. The label stream's seed is offset from noise()'s so the two are unrelated."""
        if not self.classes:
            if label is not None:
                raise ValueError(f"{self.name} is unconditional: it takes no label")
            return {}
        if label is not None:
            return {"labels": torch.full((batch,), int(label), dtype=torch.long)}
        g = torch.Generator().manual_seed(seed + 1_000_003)
        return {"labels": torch.randint(self.classes, (batch,), generator=g)}

    def fd(self, samples, reference=None, label=None):
        """Fréchet distance in this model's embedding between `samples` and `reference` samples (default: the
        model's data; with `label`, that class's digits)."""
        stats = _mean_cov(embed(self.name, reference)) if reference is not None else \
            _reference_stats(self.name, label)
        return _frechet_from_stats(*_mean_cov(embed(self.name, samples)), *stats)


def load_lab_model(name, cfg=DEFAULT_CFG, dtype=torch.float32):
    """The lab model `name` (one of LAB_MODELS) as a LabModel; `cfg` is digits_cfg's guidance scale."""
    if name == "digits":
        return LabModel(name, load_tiny_model(dtype), SHAPES[name])
    if name not in ARCHS:
        raise ValueError(f"unknown lab model {name!r}; expected one of {LAB_MODELS}")
    model = load_weights(TinyEDM(**ARCHS[name]), WEIGHTS[name], dtype)
    if name == "digits_cfg":
        return LabModel(name, CFGDenoiser(model, cfg), SHAPES[name], classes=10, cfg=float(cfg))
    return LabModel(name, model, SHAPES[name], sigma_data=model.sigma_data)
