"""Builds a tiny random SD3-style MMDiT checkpoint with ComfyUI's own MMDiT class (test-time only, no downloads).

Run with ComfyUI's Python: ``python make_tiny_mmdit.py COMFYUI_DIR OUT.safetensors``. ComfyUI detects the result as
SD3 (flow matching, shift 3): 2 joint blocks, hidden 128, 16 latent channels, context and pooled width 32.
"""
import sys

import torch


def main(comfy_dir, out):
    sys.path.insert(0, comfy_dir)
    from comfy.cli_args import args
    args.cpu = True  # before comfy.model_management is imported (CUDA-built torch without a GPU)
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    from random_weights import save_random

    torch.manual_seed(0)
    model = MMDiT(patch_size=2, in_channels=16, depth=2, adm_in_channels=32, out_channels=16,
                  context_embedder_config={"target": "torch.nn.Linear",
                                           "params": {"in_features": 32, "out_features": 128}},
                  pos_embed_max_size=16, num_patches=256, operations=torch.nn)
    save_random(model, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
