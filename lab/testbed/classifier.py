"""A small MLP digits classifier whose 128-d penultimate layer is the feature space of ``fd_digits``.

Train and ship: ``python -m dode.lab.testbed.train_tiny --classifier`` (deterministic, a few seconds on 1 thread).
Trained on 80% of the digits (``split_indices(1797, 0.2, seed=0)``); accuracy is on the other 20%.
"""
import os

import torch
from safetensors.torch import load_file
from torch import nn

from .data import load_digits_tensor, split_indices

WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "digits_classifier.safetensors")


class DigitsClassifier(nn.Module):
    """64 → 256 → 128 (features) → 10 MLP with ReLU; input (B, 1, 8, 8) or (B, 64) in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def features(self, x):
        """Penultimate activations (B, 128)."""
        return self.body(x.flatten(1))

    def forward(self, x):
        return self.head(self.features(x))


@torch.no_grad()
def accuracy(model, x, labels):
    """Fraction of `x` classified as `labels`."""
    return (model(x).argmax(1) == labels).float().mean().item()


def train_classifier(epochs=60, batch=64, seed=0, noise=0.2):
    """Adam (lr 1e-3, weight decay 1e-4) with cross-entropy on the train split, inputs jittered by
    N(0, noise²) pixel noise. Returns ``(model, held_out_accuracy)``."""
    torch.manual_seed(seed)
    images, labels = load_digits_tensor()
    train_idx, val_idx = split_indices(len(images), val_fraction=0.2, seed=seed)
    model = DigitsClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in train_idx[torch.randperm(len(train_idx), generator=g)].split(batch):
            x = images[idx] + noise * torch.randn(images[idx].shape, generator=g)
            loss = nn.functional.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval().requires_grad_(False)
    return model, accuracy(model, images[val_idx], labels[val_idx])


def load_classifier(path=WEIGHTS_PATH):
    """The shipped classifier (float32, eval mode, gradients off)."""
    model = DigitsClassifier()
    model.load_state_dict(load_file(path))
    return model.eval().requires_grad_(False)

