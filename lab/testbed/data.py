"""The 8x8 digits data set (sklearn ``load_digits``, shipped as ``data/digits.safetensors``)."""
import os

import torch
from safetensors.torch import load_file

DIGITS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.safetensors")


def load_digits_tensor():
    """Return ``(images, labels)``: float32 (1797, 1, 8, 8) scaled as x/8 - 1 into [-1, 1], int64 (1797,)."""
    tensors = load_file(DIGITS_PATH)
    images = tensors["images"].to(torch.float32).div(8.0).sub(1.0).unsqueeze(1)
    return images, tensors["labels"].to(torch.int64)


def split_indices(n, val_fraction=0.2, seed=0):
    """Deterministic ``(train_idx, val_idx)`` split of ``range(n)`` from a seeded permutation."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    return perm[n_val:], perm[:n_val]
