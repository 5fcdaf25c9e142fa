"""Random weights for the tiny test models built with ComfyUI's own classes (make_tiny_*.py), saved as safetensors."""
import torch
from safetensors.torch import save_file


def save_random(model, out, special=lambda name, value: None):
    """Saves ``model``'s state with zero biases, unit 1-D norm weights, N(0, 0.02²) elsewhere, except where
    ``special(name, value)`` returns a tensor."""
    state = {}
    for name, value in model.state_dict().items():
        chosen = special(name, value)
        if chosen is None:
            if name.endswith("bias"):
                chosen = torch.zeros_like(value)
            elif "norm" in name and value.ndim == 1:
                chosen = torch.ones_like(value)
            else:
                chosen = torch.randn_like(value) * 0.02
        state[name] = chosen.contiguous()
    save_file(state, out)
    print(f"wrote {out}: {len(state)} tensors, {sum(v.numel() for v in state.values())} parameters")
