"""The demo: distill λ for a few-step sampler on the embedded tiny digits model, save the λ file, and compare
stock vs D-ODE vs the teacher sampling from the same held-out noise (a table and a PNG)."""
import os
import time

from .protocol import grid, noise, teacher_output
from ..lambdas import DEFAULT_OBJECTIVE, DEFAULT_TEACHER, distill, find_lambdas, load_lambdas, save_lambdas
from ..plot import compare_figure, digit_grid, labelled_rows, lambda_chart, schedule_chart
from ..samplers import get_solver, sample
from .testbed import fd_digits, load_tiny_model, rmse

MODEL_ID = "dode-lab/testbed/tiny_edm_digits"
COLUMNS = 14  # held-out latents shown (the first ones)


def run_demo(out_dir, sampler="euler", steps=5, teacher=DEFAULT_TEACHER, scale=None, objective=DEFAULT_OBJECTIVE,
             schedule=True, fit_batch=256, eval_batch=2000, log=print):
    """Fits λ (with ``schedule``, the σ grid too), saves, reloads and evaluates it, draws the figure; returns the
    numbers it printed and the paths. ``scale`` None is distill's default for ``objective``."""
    start = time.perf_counter()
    model = load_tiny_model()
    stock_sigmas = grid(steps)
    fit = distill(model, noise(fit_batch, 0), stock_sigmas, sampler, teacher=teacher, scale=scale,
                  objective=objective, schedule=schedule, compare_stock=True, disable=True)
    sigmas = fit.sigmas.to(stock_sigmas.dtype)  # the grid λ was fitted for (float64): the one to sample with
    log(f"fit on {fit_batch} latents, {sampler} ({steps} steps), teacher {fit.teacher}×{fit.scale}:\n"
        f"{fit.report.table()}\n")
    os.makedirs(out_dir, exist_ok=True)
    path = save_lambdas(os.path.join(out_dir, f"tiny_edm_digits.{sampler}{steps}.dode.safetensors"), fit,
                        model=MODEL_ID)
    log(f"λ file: {os.path.abspath(path)}")
    lambdas = find_lambdas(load_lambdas(path), sampler, sigmas, model=MODEL_ID).lambdas
    eval_x = noise(eval_batch, 1)
    outputs = {
        "stock": sample(model, eval_x, stock_sigmas, sampler, disable=True),
        "D-ODE": sample(model, eval_x, sigmas, sampler, lambdas=lambdas, disable=True),
        "teacher": teacher_output(model, eval_x, stock_sigmas, sampler, fit.teacher, fit.scale),
    }
    rows = {name: {"fd": fd_digits(out), "rmse_teacher": rmse(out, outputs["teacher"])}
            for name, out in outputs.items()}
    log(f"held-out noise ({eval_batch} samples); FD: Fréchet distance to real digits in the digits classifier's "
        f"features (lower is better)\n| {'':<8} | {'FD':>6} | {'RMSE to teacher':>15} |")
    for name, row in rows.items():
        log(f"| {name:<8} | {row['fd']:>6.2f} | {row['rmse_teacher']:>15.4f} |")
    compute = time.perf_counter() - start
    png = os.path.join(out_dir, f"demo_{sampler}{steps}.png")
    figure(fit, outputs, rows, stock_sigmas, eval_batch).save(png, optimize=True)
    log(f"figure: {os.path.abspath(png)}\ncompute {compute:.1f} s, total {time.perf_counter() - start:.1f} s")
    return {"lambda_file": path, "png": png, "rows": rows, "lambdas": fit.lambdas.tolist(), "seconds": compute}


def figure(fit, outputs, rows, stock_sigmas, eval_batch):
    """Stock, D-ODE and teacher digits from the same noise, one row each (a column is one latent), then λ per
    evaluation and the σ schedule."""
    label, teacher = get_solver(fit.sampler).label, get_solver(fit.teacher).label
    nfe, steps = len(fit.lambdas), len(stock_sigmas) - 1
    fd = {name: f"FD {row['fd']:.2f}" for name, row in rows.items()}
    strips = [(f"stock {label}", f"{nfe} NFE, {fd['stock']}"),
              (f"D-ODE {label}", f"{nfe} NFE, {fd['D-ODE']}"),
              (f"teacher {teacher} x{fit.scale}", f"{fit.report.teacher_nfe} NFE, {fd['teacher']}")]
    body = labelled_rows([(head, sub, digit_grid(out, 1, COLUMNS, zoom=6, gap=6))
                          for (head, sub), out in zip(strips, outputs.values())])
    chart_w = (body.width - 24) // 2
    fitted = fit.sigmas if fit.schedule == "fitted" else None
    charts = [lambda_chart(fit.lambdas, [s["sigma"] for s in fit.report.steps], width=chart_w, height=260,
                           title="fitted lambda per network evaluation",
                           caption="x: the sigma the network is evaluated at"),
              schedule_chart(stock_sigmas, fitted, width=chart_w, height=260,
                             title="sigma schedule, log scale" + ("" if fitted is not None else " (Karras, given)"))]
    what = "lambda and sigma schedule" if fitted is not None else "lambda"
    title = f"D-ODE on the tiny digits model: {label}, {steps} steps; {what} fitted in {fit.report.seconds:.2f} s"
    note = [f"Each column is one held-out noise latent (the first {COLUMNS} of {eval_batch}), sampled three ways. "
            "D-ODE costs the same network calls as stock.",
            "FD: Frechet distance to real digits in the features of a digits classifier, over all "
            f"{eval_batch} samples (lower is better; real digits vs themselves: 0.55-0.86)."]
    return compare_figure(title, body, charts, note=note)
