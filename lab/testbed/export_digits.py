"""One-off export of sklearn's ``load_digits`` to ``lab/testbed/data/digits.safetensors``.

Needs scikit-learn (export time only; the testbed never imports it):
    python lab/testbed/export_digits.py
"""
import os

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits


def main():
    digits = load_digits()
    images = torch.from_numpy(digits.images).round().to(torch.uint8)  # (1797, 8, 8), values 0..16
    labels = torch.from_numpy(digits.target).to(torch.int64)           # (1797,)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "digits.safetensors")
    save_file({"images": images.contiguous(), "labels": labels.contiguous()}, path,
              metadata={"source": "sklearn.datasets.load_digits (UCI optdigits test set)"})
    print(f"wrote {path}: images {tuple(images.shape)} labels {tuple(labels.shape)}")


if __name__ == "__main__":
    main()
