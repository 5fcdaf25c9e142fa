"""The demo: distill λ for a few-step sampler on the embedded tiny digits model, save the λ file, and compare
stock vs D-ODE sampling from the same held-out noise (table + PNG)."""
import os
import time

import torch

from .bench import grid, noise, teacher_output
from .lambdas import DEFAULT_SCALE, DEFAULT_TEACHER, distill, find_lambdas, load_lambdas, save_lambdas
from .samplers import sample
from .testbed import fd_digits, load_tiny_model, rmse

MODEL_ID = "dode-testbed/tiny_edm_digits"


def run_demo(out_dir, sampler="euler", steps=5, teacher=DEFAULT_TEACHER, scale=DEFAULT_SCALE, fit_batch=256,
             eval_batch=2000, log=print):
    """Fits, saves, reloads and evaluates λ; returns the numbers it printed."""
    start = time.perf_counter()
    model = load_tiny_model()
    sigmas = grid(steps)
    fit = distill(model, noise(fit_batch, 0), sigmas, sampler, teacher=teacher, scale=scale, compare_stock=True,
                  disable=True)
    log(f"fitted {len(fit.lambdas)} λ for {sampler} ({steps} steps) against {teacher}×{scale} on {fit_batch} latents "
        f"in {fit.report.seconds:.2f} s\n{fit.report.table()}\n")
    os.makedirs(out_dir, exist_ok=True)
    path = save_lambdas(os.path.join(out_dir, f"tiny_edm_digits.{sampler}{steps}.dode.safetensors"), fit,
                        model=MODEL_ID)
    lambdas = find_lambdas(load_lambdas(path), sampler, sigmas, model=MODEL_ID).lambdas
    eval_x = noise(eval_batch, 1)
    outputs = {
        "stock": sample(model, eval_x, sigmas, sampler, disable=True),
        "D-ODE": sample(model, eval_x, sigmas, sampler, lambdas=lambdas, disable=True),
        "teacher": teacher_output(model, eval_x, sigmas, sampler, teacher, scale),
    }
    rows = {name: {"fd": fd_digits(out), "rmse_teacher": rmse(out, outputs["teacher"])}
            for name, out in outputs.items()}
    log(f"held-out noise ({eval_batch} samples):\n| {'':<8} | {'FD':>6} | {'RMSE to teacher':>15} |")
    for name, row in rows.items():
        log(f"| {name:<8} | {row['fd']:>6.2f} | {row['rmse_teacher']:>15.4f} |")
    png = os.path.join(out_dir, f"demo_{sampler}{steps}.png")
    plot(png, outputs, rows, fit, sampler, steps, teacher, scale)
    log(f"\nλ file: {path}\nfigure: {png}\ntotal {time.perf_counter() - start:.1f} s")
    return {"lambda_file": path, "png": png, "rows": rows, "lambdas": fit.lambdas.tolist()}


def tile(images, n=8):
    """The first n×n images (B, 1, 8, 8) in [-1, 1] as one (8n, 8n) array with 1-pixel gaps."""
    cells = images[: n * n].clamp(-1, 1).reshape(n, n, 8, 8)
    canvas = torch.ones(n * 9 - 1, n * 9 - 1)
    for r in range(n):
        for c in range(n):
            canvas[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = cells[r, c]
    return canvas.numpy()


def plot(path, outputs, rows, fit, sampler, steps, teacher, scale):
    """Side-by-side sample grids from the same noise, and λ per network evaluation."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise SystemExit("the demo figure needs matplotlib: pip install matplotlib (or pip install -e '.[demo]')") from e
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), gridspec_kw={"width_ratios": [1, 1, 1, 1.3]})
    for ax, (name, out) in zip(axes, outputs.items()):
        ax.imshow(tile(out), cmap="gray_r", vmin=-1, vmax=1)
        label = f"{teacher}×{scale} teacher" if name == "teacher" else f"{name} {sampler}, {len(fit.lambdas)} NFE"
        ax.set_title(f"{label}\nFD {rows[name]['fd']:.2f}")
        ax.axis("off")
    ax = axes[3]
    ax.bar(range(len(fit.lambdas)), fit.lambdas.numpy(), color="tab:blue")
    ax.set_xticks(range(len(fit.lambdas)), [f"{s['sigma']:.3g}" for s in fit.report.steps], rotation=45)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("evaluation (σ it lands on)")
    ax.set_ylabel("λ")
    ax.set_title("fitted λ per network evaluation")
    fig.suptitle(f"D-ODE on the tiny digits model: {sampler}, {steps} steps (same held-out noise)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
