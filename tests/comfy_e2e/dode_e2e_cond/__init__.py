"""Test-only ComfyUI node for the dode end-to-end suite: random SD3-shaped conditioning without a text encoder."""
import torch


class DodeE2EConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": 77})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        context = torch.randn(1, tokens, 32, generator=g)
        pooled = torch.randn(1, 32, generator=g)
        return ([[context, {"pooled_output": pooled}]],)


NODE_CLASS_MAPPINGS = {"DodeE2EConditioning": DodeE2EConditioning}
