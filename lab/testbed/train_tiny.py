"""Train the shipped TinyEDM digits denoiser: ``python -m dode.lab.testbed.train_tiny [--steps N]``
(``--classifier``: train and ship the FD digits classifier instead).

EDM loss E[λ(σ) ‖D(y + σ n, σ) − y‖²] / 64 with λ(σ) = (σ² + σd²) / (σ σd)², ln σ ~ N(−1.2, 1.2²);
Adam (lr 1e-3, linear decay to 0 over the second half), EMA 0.999, batch 256, 1 CPU thread, seeded.
Trains on 90% of the digits. The train / val losses are the EMA model's loss on the 90% / the held-out 10%
with fixed noise on a fixed σ grid (16 quantiles of the training σ distribution); with ~1600 images the model
memorises at small σ, so the val loss bottoms out early and rises while the train loss keeps falling.
Saves the EMA weights as fp16 safetensors.
"""
import argparse
import copy
import time

import torch
from safetensors.torch import save_file

from . import classifier
from .data import load_digits_tensor, split_indices
from .tiny_model import SIGMA_DATA, WEIGHTS_PATH, TinyEDM

P_MEAN, P_STD = -1.2, 1.2


def edm_loss(model, y, sigma, noise, sigma_data=SIGMA_DATA, **extra_args):
    """Per-sample EDM loss λ(σ) ‖D(y + σ n, σ) − y‖² / dim, λ(σ) = (σ² + σd²) / (σ σd)²."""
    denoised = model(y + sigma[:, None, None, None] * noise, sigma, **extra_args)
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return weight * (denoised - y).pow(2).flatten(1).mean(1)


@torch.no_grad()
def eval_loss(model, y, seed=1234, n_sigmas=16, sigma_data=SIGMA_DATA, **extra_args):
    """Mean EDM loss on `y` over σ = exp(P_MEAN + P_STD Φ⁻¹((i + ½)/n)), i < n, with seeded noise."""
    g = torch.Generator().manual_seed(seed)
    quantiles = (torch.arange(n_sigmas, dtype=torch.float64) + 0.5) / n_sigmas
    sigmas = torch.exp(P_MEAN + P_STD * torch.special.ndtri(quantiles)).float()
    losses = [edm_loss(model, y, s.expand(len(y)), torch.randn(y.shape, generator=g), sigma_data, **extra_args).mean()
              for s in sigmas]
    return torch.stack(losses).mean().item()


def learning_rate(step, steps, base=1e-3):
    """Constant `base` for the first half, then linear decay to 0."""
    half = steps // 2
    return base if step < half else base * (steps - step) / (steps - half)


def train(steps=36000, seed=0, batch=256, ema_decay=0.999, log_every=2000):
    """Train from seed; return ``(ema_model, info)``, info = {steps, seed, params, train_loss, val_loss, seconds}."""
    torch.manual_seed(seed)
    images, _ = load_digits_tensor()
    train_idx, val_idx = split_indices(len(images), val_fraction=0.1, seed=seed)
    data, val = images[train_idx], images[val_idx]
    model = TinyEDM()
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps)
        y = data[torch.randint(len(data), (batch,), generator=g)]
        sigma = torch.exp(P_MEAN + P_STD * torch.randn(batch, generator=g))
        loss = edm_loss(model, y, sigma, torch.randn(y.shape, generator=g)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - ema_decay)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"step {step + 1:6d}  batch loss {loss.item():.4f}  ema train {eval_loss(ema, data):.4f}  "
                  f"ema val {eval_loss(ema, val):.4f}  {time.time() - start:6.1f}s", flush=True)
    info = {"steps": steps, "seed": seed, "params": sum(p.numel() for p in ema.parameters()),
            "train_loss": round(eval_loss(ema, data), 5), "val_loss": round(eval_loss(ema, val), 5),
            "seconds": round(time.time() - start, 1)}
    return ema.eval(), info


def save_weights(model, info, path=WEIGHTS_PATH, arch="TinyEDM(width=128, blocks=3, emb_dim=128)",
                 sigma_data=SIGMA_DATA):
    """Save `model`'s state dict as fp16 safetensors with `info` (stringified), `arch` and σ_data as metadata."""
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    meta = {k: str(v) for k, v in info.items()}
    meta.update(arch=arch, sigma_data=str(sigma_data), dtype="float16")
    save_file(tensors, path, metadata=meta)


def ship_classifier(path=classifier.WEIGHTS_PATH):
    """Train the digits classifier and save it (float32 safetensors, held-out accuracy in the metadata)."""
    model, acc = classifier.train_classifier()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, path, metadata={"held_out_accuracy": f"{acc:.4f}", "split": "20% held out, seed 0"})
    print(f"held-out accuracy {acc:.4f}; saved {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=36000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output path (default: the shipped weights file)")
    parser.add_argument("--classifier", action="store_true", help="train and ship the digits classifier instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.classifier:
        ship_classifier(args.out or classifier.WEIGHTS_PATH)
        return
    model, info = train(steps=args.steps, seed=args.seed)
    out = args.out or WEIGHTS_PATH
    save_weights(model, info, out)
    print(f"saved {out}: {info}")


if __name__ == "__main__":
    main()
