"""16 × 16 RGB patches of two natural photos and their 4 × 8 × 8 "latents" (data/photos.safetensors).

The photos are scikit-learn's china.jpg and flower.jpg at half resolution (``export_photos.py``). The right-most
VAL_COLUMNS columns of each photo are held out: "train" patches lie left of them, "val" patches inside them.
"""
import functools
import os

import torch
from safetensors.torch import load_file

PHOTOS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "photos.safetensors")
PATCH = 16
VAL_COLUMNS = 48
LATENT_SEED = 0
LATENT_SCALE = 1.5  # ≈ 1 / 0.654, the unscaled latents' std over train patches (cf. SD's 0.18215)


@functools.lru_cache(maxsize=1)
def load_photos():
    """The two photos as float32 (2, 3, 213, 320), scaled as x / 127.5 − 1 into [-1, 1]."""
    return load_file(PHOTOS_PATH)["images"].to(torch.float32).div(127.5).sub(1.0)


def _columns(split, width, size):
    """The range [lo, hi) of left patch edges for `split` ("train", "val" or "all")."""
    if split == "train":
        return 0, width - VAL_COLUMNS - size + 1
    if split == "val":
        return width - VAL_COLUMNS, width - size + 1
    if split == "all":
        return 0, width - size + 1
    raise ValueError(f"split must be 'train', 'val' or 'all', not {split!r}")


def random_patches(n, generator, split="train", size=PATCH):
    """`n` patches (n, 3, size, size) at uniform random (photo, top, left) positions inside `split`."""
    photos = load_photos()
    height, width = photos.shape[2:]
    lo, hi = _columns(split, width, size)
    image = torch.randint(len(photos), (n,), generator=generator)
    top = torch.randint(height - size + 1, (n,), generator=generator)
    left = torch.randint(lo, hi, (n,), generator=generator)
    offsets = torch.arange(size)
    rows, cols = top[:, None] + offsets, left[:, None] + offsets
    return photos[image[:, None, None, None], torch.arange(3)[None, :, None, None], rows[:, None, :, None],
                  cols[:, None, None, :]]


def patch_set(n, split="train", seed=0):
    """A fixed seeded set of `n` patches from `split` (``random_patches`` with a fresh generator)."""
    return random_patches(n, torch.Generator().manual_seed(seed), split)


@functools.lru_cache(maxsize=1)
def latent_map():
    """(12, 4) float32 with orthonormal columns: QR of a seeded N(0, 1) draw, column signs fixed by diag R > 0."""
    g = torch.Generator().manual_seed(LATENT_SEED)
    q, r = torch.linalg.qr(torch.randn(12, 4, generator=g, dtype=torch.float64))
    return (q * r.diagonal().sign()).float()


def to_latent(rgb):
    """(B, 3, 2h, 2w) → (B, 4, h, w): each 2 × 2 × 3 block (pixel_unshuffle order) · latent_map(), × LATENT_SCALE."""
    blocks = torch.nn.functional.pixel_unshuffle(rgb, 2)
    return LATENT_SCALE * torch.einsum("bkhw,kc->bchw", blocks, latent_map().to(rgb))


def from_latent(latent):
    """The least-squares RGB (B, 3, 2h, 2w) of a latent: the transpose map (an orthogonal projection)."""
    blocks = torch.einsum("bchw,kc->bkhw", latent / LATENT_SCALE, latent_map().to(latent))
    return torch.nn.functional.pixel_shuffle(blocks, 2)
