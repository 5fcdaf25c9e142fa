"""Test-only ComfyUI nodes for the dode end-to-end suites: random conditioning without a text encoder, SD3-shaped
(context and pooled width 32) and Wan-shaped (the umT5 width, 4096)."""
import torch


class DodeE2EConditioning:
    MAX_TOKENS = 77

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "tokens": ("INT", {"default": 8, "min": 1, "max": cls.MAX_TOKENS})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        context = torch.randn(1, tokens, 32, generator=g)
        pooled = torch.randn(1, 32, generator=g)
        return ([[context, {"pooled_output": pooled}]],)


class DodeE2EWanConditioning(DodeE2EConditioning):
    MAX_TOKENS = 512

    def make(self, seed, tokens):
        g = torch.Generator().manual_seed(seed)
        return ([[torch.randn(1, tokens, 4096, generator=g), {}]],)


NODE_CLASS_MAPPINGS = {"DodeE2EConditioning": DodeE2EConditioning, "DodeE2EWanConditioning": DodeE2EWanConditioning}
