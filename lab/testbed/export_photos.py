"""One-off export of scikit-learn's two sample photos to ``lab/testbed/data/photos.safetensors``.

china.jpg and flower.jpg (427 × 640 RGB, shipped in the scikit-learn wheel) are 2 × 2 box-averaged to
213 × 320 and stored as uint8 (2, 3, 213, 320); ``patches.py`` cuts the 16 × 16 patches from them.
Needs scikit-learn (export time only; the testbed never imports it):
    python lab/testbed/export_photos.py
"""
import os

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_sample_images


def half_resolution(image):
    """(H, W, 3) uint8 → (3, H // 2, W // 2) uint8 by 2 × 2 box averaging (rounded)."""
    x = torch.from_numpy(image.copy()).permute(2, 0, 1).to(torch.float64)
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    return torch.nn.functional.avg_pool2d(x[None, :, :h, :w], 2)[0].round().to(torch.uint8)


def main():
    photos = load_sample_images()
    images = torch.stack([half_resolution(im) for im in photos.images])
    names = ",".join(os.path.basename(f) for f in photos.filenames)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "photos.safetensors")
    save_file({"images": images.contiguous()}, path,
              metadata={"source": f"sklearn.datasets.load_sample_images ({names}), 2x2 box-averaged"})
    print(f"wrote {path}: images {tuple(images.shape)}")


if __name__ == "__main__":
    main()
