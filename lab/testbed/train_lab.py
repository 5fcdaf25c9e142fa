"""Train a lab test model: ``python -m dode.lab.testbed.train_lab NAME [--steps N] [--seed S] [--out PATH]``.

NAME is digits_cfg (the digits with class labels, each dropped to the null class with probability 0.1, for
classifier-free guidance), rgb (3 × 16 × 16 photo patches) or latent (their 4 × 8 × 8 latents).
The recipe is train_tiny's: EDM loss with ln σ ~ N(−1.2, 1.2²), Adam (lr 1e-3, linear decay to 0 over the second
half), EMA 0.999, batch 256, 1 CPU thread, seeded. Digits train on the 90% split; patches are cut afresh at
random train positions every step (their TinyEDM adds the SpectralGain path). The train / val losses are the EMA
model's eval_loss on fixed sets (digits: the 90% / held-out 10%, true labels; patches: 2048 train-column / 2048
held-out-column patches), next to the trivial loss of D = c_skip(σ) x (F = 0). Saves EMA weights as fp16.
"""
import argparse
import copy
import time

import torch

from .data import load_digits_tensor, split_indices
from .lab_models import ARCHS, NULL_LABEL, WEIGHTS
from .patches import patch_set, random_patches, to_latent
from .tiny_model import TinyEDM, edm_scalings
from .train_tiny import P_MEAN, P_STD, edm_loss, eval_loss, learning_rate, save_weights

LABEL_DROPOUT = 0.1
DEFAULT_STEPS = {"digits_cfg": 20000, "rgb": 8000, "latent": 8000}


def digits_split(seed):
    """``(train, val)`` of the 90 / 10 digits split, each ``(images, labels)``."""
    images, labels = load_digits_tensor()
    train_idx, val_idx = split_indices(len(images), val_fraction=0.1, seed=seed)
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def training_batch(name, g, batch, digits_train):
    """``(y, extra_args)``: digits with labels dropped to NULL_LABEL w.p. LABEL_DROPOUT, or fresh train patches."""
    if name == "digits_cfg":
        images, labels = digits_train
        idx = torch.randint(len(images), (batch,), generator=g)
        drop = torch.rand(batch, generator=g) < LABEL_DROPOUT
        return images[idx], {"labels": labels[idx].masked_fill(drop, NULL_LABEL)}
    y = random_patches(batch, g, "train")
    return (to_latent(y) if name == "latent" else y), {}


def eval_sets(name, seed):
    """Fixed ``(train, val)`` evaluation sets, each ``(y, extra_args)``."""
    if name == "digits_cfg":
        return tuple((images, {"labels": labels}) for images, labels in digits_split(seed))
    sets = (patch_set(2048, "train", seed=seed + 1), patch_set(2048, "val", seed=seed + 2))
    return tuple((to_latent(y) if name == "latent" else y, {}) for y in sets)


def skip_only(sigma_data):
    """The trivial EDM denoiser D = c_skip(σ) x (the network output F = 0)."""
    def denoiser(x, sigma, **extra_args):
        return edm_scalings(sigma.reshape(-1, *[1] * (x.dim() - 1)), sigma_data)[0] * x
    return denoiser


def losses(model, name, sets, sigma_data):
    """{train_loss, val_loss, trivial_loss} of `model` on the fixed `sets` (trivial: D = c_skip x on val)."""
    (train_y, train_args), (val_y, val_args) = sets
    out = {"train_loss": eval_loss(model, train_y, sigma_data=sigma_data, **train_args),
           "val_loss": eval_loss(model, val_y, sigma_data=sigma_data, **val_args),
           "trivial_loss": eval_loss(skip_only(sigma_data), val_y, sigma_data=sigma_data)}
    if name == "digits_cfg":
        out["val_loss_null_class"] = eval_loss(model, val_y, sigma_data=sigma_data)
    return {k: round(v, 5) for k, v in out.items()}


def train(name, steps=None, seed=0, batch=256, ema_decay=0.999, log_every=2000):
    """Train `name` from seed; return ``(ema_model, info)`` with the losses, parameter count and seconds."""
    steps = steps or DEFAULT_STEPS[name]
    torch.manual_seed(seed)
    arch = ARCHS[name]
    model = TinyEDM(**arch)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    digits_train = digits_split(seed)[0] if name == "digits_cfg" else None
    sets = eval_sets(name, seed)
    start = time.time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps)
        y, extra_args = training_batch(name, g, batch, digits_train)
        sigma = torch.exp(P_MEAN + P_STD * torch.randn(batch, generator=g))
        noise = torch.randn(y.shape, generator=g)
        loss = edm_loss(model, y, sigma, noise, model.sigma_data, **extra_args).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - ema_decay)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            print(f"step {step + 1:6d}  batch loss {loss.item():.4f}  {losses(ema, name, sets, model.sigma_data)}  "
                  f"{time.time() - start:6.1f}s", flush=True)
    info = {"name": name, "steps": steps, "seed": seed, "params": sum(p.numel() for p in ema.parameters()),
            **losses(ema, name, sets, model.sigma_data), "seconds": round(time.time() - start, 1)}
    return ema.eval(), info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(ARCHS))
    parser.add_argument("--steps", type=int, default=None, help="default: DEFAULT_STEPS[name]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output path (default: the shipped weights file)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, info = train(args.name, steps=args.steps, seed=args.seed)
    out = args.out or WEIGHTS[args.name]
    save_weights(model, info, out, arch=f"TinyEDM(**{ARCHS[args.name]})", sigma_data=model.sigma_data)
    print(f"saved {out}: {info}")


if __name__ == "__main__":
    main()
