"""Test-only ComfyUI node for the dode video end-to-end suite: random Wan-shaped conditioning (the umT5 width, 4096)
without a text encoder. A single-file custom node: tests/test_comfy_e2e_video.py links it into custom_nodes/ itself
(the package's __init__ does not import it)."""
import torch


class DodeE2EWanConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 512})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, 4096, generator=g), {}]],)


NODE_CLASS_MAPPINGS = {"DodeE2EWanConditioning": DodeE2EWanConditioning}
