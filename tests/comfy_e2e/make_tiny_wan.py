"""Builds a tiny random Wan 2.1-style text-to-video model with ComfyUI's own WanModel class (test-time only, no
downloads).

Run with ComfyUI's Python: ``python make_tiny_wan.py COMFYUI_DIR OUT.safetensors``. ComfyUI detects the result as
Wan 2.1 t2v (``head.modulation`` present, no ``img_emb``; flow matching, shift 8): 2 blocks, hidden 128 (the detector
sets heads = dim // 128, so 128 is the smallest width), 16 latent channels, patch (1, 2, 2). The detector does not
read the text width, so it is WanModel's default, 4096: the conditioning must be (1, L, 4096). Wan zero-initialises
its output layer; here every weight is random (and the head larger), so the output depends on the input.
"""
import sys

import torch

DIM, FFN, LAYERS, TEXT_DIM = 128, 256, 2, 4096


def main(comfy_dir, out):
    sys.path.insert(0, comfy_dir)
    from comfy.cli_args import args
    args.cpu = True  # before comfy.model_management is imported (CUDA-built torch without a GPU)
    from comfy.ldm.wan.model import WanModel

    from random_weights import save_random

    torch.manual_seed(0)
    model = WanModel(model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=DIM, ffn_dim=FFN, freq_dim=256,
                     text_dim=TEXT_DIM, out_dim=16, num_heads=DIM // 128, num_layers=LAYERS, qk_norm=True,
                     cross_attn_norm=True, eps=1e-6, operations=torch.nn)
    save_random(model, out, head_and_modulation)


def head_and_modulation(name, value):
    """The output head (zero in Wan's own init) and the modulations (torch.empty in WanModel): randn / √dim."""
    if name == "head.head.weight" or name.endswith("modulation"):
        return torch.randn_like(value) / DIM ** 0.5
    return None


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
