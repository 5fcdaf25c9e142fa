"""Closed-form distillation of λ (D-ODE, Kim et al. 2024), with teacher targets aligned by noise level.

The teacher runs on a grid that contains every noise level a student evaluation lands on, with each interval
between them refined into ``scale`` sub-steps. The student then runs once; at each evaluation its next state is
affine in λ, ``x = a + λ b``, so λ = ⟨target − a, b⟩ / ⟨b, b⟩ in float64 over the whole batch, applied before the
next network call. No autograd, and no network calls beyond one teacher run and one student run.
"""
import math
import time
from dataclasses import dataclass, field

import torch

from ..samplers import check_batch, check_sigmas, flow_option, get_solver, landing_sigmas, nfe
from ..samplers.base import apply_lambda
from .files import LambdaEntry

DEFAULT_TEACHER = "dpmpp_2m"  # measured: same λ quality as a Heun teacher at half its network calls (README)
DEFAULT_SCALE = 10
FIRST_STEP_MODES = ("none", "x")
DEFAULT_FIRST_STEP = "none"
DEGENERATE_RATIO = 1e-4  # a direction under this fraction of the step needs a huge, ill-conditioned λ: skip it


def teacher_grid(sigmas, landings, scale, rho=7.0):
    """The teacher's σ grid: every student σ and landing σ, each interval split into ``scale`` sub-steps uniform
    in σ^(1/ρ) (the Karras spacing), so the grid refines every student interval. Float64, decreasing."""
    knots = torch.unique(torch.cat([sigmas.double().cpu(), landings.double().cpu()])).flip(0)
    lo, hi = knots[1:] ** (1 / rho), knots[:-1] ** (1 / rho)
    frac = torch.arange(scale, dtype=torch.float64) / scale
    inner = (hi[:, None] + (lo - hi)[:, None] * frac[None, :]) ** rho
    inner[:, 0] = knots[:-1]
    return torch.cat([inner.flatten(), knots[-1:]])


@dataclass
class FitReport:
    """What the fit did: per evaluation λ, its noise level and the distance to the teacher before/after λ."""
    steps: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    rmse_before: float = math.nan
    rmse_after: float = math.nan
    rmse_stock: float = math.nan
    teacher_nfe: int = 0
    student_nfe: int = 0
    seconds: float = 0.0

    def table(self):
        """A plain-text table of the fit, one row per network evaluation."""
        rows = [f"{'eval':>4} {'sigma':>9} {'lambda':>9} {'rmse λ=0':>10} {'rmse fit':>10}"]
        rows += [f"{s['eval']:>4} {s['sigma']:>9.4g} {s['lambda']:>9.4f} {s['rmse_before']:>10.5f} "
                 f"{s['rmse_after']:>10.5f}" for s in self.steps]
        rows.append(f"final rmse to teacher: stock {self.rmse_stock:.5f}, last step λ=0 {self.rmse_before:.5f}, "
                    f"D-ODE {self.rmse_after:.5f}")
        rows += [f"warning: {w}" for w in self.warnings]
        return "\n".join(rows)


class TeacherTargets:
    """Teacher states at the noise levels the student lands on, looked up by σ."""

    def __init__(self, grid, states):
        self.grid = grid
        self.states = states

    def at(self, sigma):
        sigma = float(sigma)
        k = int((self.grid - sigma).abs().argmin())
        if abs(float(self.grid[k]) - sigma) > 1e-5 * max(sigma, 1e-8):
            raise RuntimeError(f"no teacher state at σ={sigma:.6g}; the teacher grid must contain every landing σ")
        return self.states[k]


class LambdaFit:
    """λ provider that solves each λ in closed form against the teacher and applies it at once.

    With ``fit=False`` it applies λ = 0 and only records distances (the stock student, for the report)."""

    def __init__(self, targets, report, first_step=DEFAULT_FIRST_STEP, clamp=None, fit=True):
        self.targets = targets
        self.report = report
        self.first_step = first_step
        self.clamp = clamp
        self.fit = fit
        self.lambdas = []
        self.last = None

    def __call__(self, i, x, x_plain, coef, out, prev, sigma_next):
        target = self.targets.at(sigma_next)
        residual = target.double() - x_plain.double()
        direction = (out - prev).double() * float(coef)
        lam = self.solve(i, residual, direction, x_plain.double() - x.double()) if self.fit else 0.0
        self.lambdas.append(lam)
        before = residual.square().mean().sqrt().item()
        after = (residual - lam * direction).square().mean().sqrt().item()
        self.last = (before, after)
        if self.fit:
            self.report.steps.append({"eval": i, "sigma": float(sigma_next), "lambda": lam,
                                      "rmse_before": before, "rmse_after": after})
        return apply_lambda(lam, x_plain, coef, out, prev)

    def solve(self, i, residual, direction, step):
        """λ = ⟨target − a, b⟩ / ⟨b, b⟩, or 0 where the step has no usable direction.

        A direction shorter than DEGENERATE_RATIO × the stock step (‖a − x‖) is numerically degenerate: it would take
        |λ| ≳ 1e4 to matter, and such a λ is an artefact of the greedy fit that later steps then chase (measured on
        Heun's predictor, where D_i − D'_{i−1} are two outputs at the same σ: Heun-9 FD 19.3 → 5.1)."""
        if i == 0 and self.first_step == "none":
            return 0.0
        if not (torch.isfinite(residual).all() and torch.isfinite(direction).all()):
            self.report.warnings.append(f"evaluation {i}: NaN/inf in the model output or state; λ set to 0")
            return 0.0
        bb = direction.square().sum().item()
        if bb == 0 or bb <= (DEGENERATE_RATIO ** 2) * step.square().sum().item():
            self.report.warnings.append(f"evaluation {i}: the correction direction is ~0 next to the step "
                                        f"(|b| < {DEGENERATE_RATIO:g}·|step|); λ set to 0")
            return 0.0
        lam = (residual * direction).sum().item() / bb
        if self.clamp is not None and abs(lam) > self.clamp:
            self.report.warnings.append(f"evaluation {i}: λ={lam:.4g} clamped to ±{self.clamp:g}")
            lam = math.copysign(self.clamp, lam)
        return lam


@dataclass
class DistillResult:
    """Fitted λ and everything needed to use, save and judge it."""
    lambdas: torch.Tensor
    sampler: str
    sigmas: torch.Tensor
    teacher: str
    scale: int
    first_step: str
    samples: torch.Tensor
    teacher_samples: torch.Tensor
    report: FitReport

    def entry(self, model="", cfg=None, aliases=(), **extra):
        """This fit as a λ-file entry for ``model`` (a host-supplied identity, plus ``aliases`` of the same model) and
        CFG scale ``cfg``; ``extra`` goes into the metrics."""
        metrics = {"rmse_stock": self.report.rmse_stock, "rmse_before": self.report.rmse_before,
                   "rmse_dode": self.report.rmse_after, "batch": int(self.samples.shape[0]),
                   "fit_seconds": round(self.report.seconds, 3), **extra}
        metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        return LambdaEntry(sampler=self.sampler, sigmas=self.sigmas, lambdas=self.lambdas, model=model,
                           aliases=list(aliases), cfg=cfg, teacher=self.teacher, scale=self.scale,
                           first_step=self.first_step, metrics=metrics)


def check_fit_args(sampler, teacher, scale, first_step, clamp):
    get_solver(sampler)
    get_solver(teacher)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer ≥ 1 (teacher sub-steps per student interval), got {scale!r}")
    if first_step not in FIRST_STEP_MODES:
        raise ValueError(f"first_step must be one of {FIRST_STEP_MODES}, got {first_step!r}")
    if clamp is not None and not clamp > 0:
        raise ValueError(f"clamp must be a positive bound on |λ| or None, got {clamp!r}")


def progress(callback, phase, total):
    """Adapts a ``{"phase", "i", "total", "x", "denoised"}`` progress callback to a sampler callback (``x`` and
    ``denoised`` are the sampler's current state and model output, for previews; None if it gives none)."""
    if callback is None:
        return None
    return lambda info: callback({"phase": phase, "i": info["i"], "total": total, "x": info.get("x"),
                                  "denoised": info.get("denoised")})


def run_teacher(model, x, grid, teacher, extra_args, callback, disable, keep):
    """Runs the teacher on ``grid`` (in the host's σ dtype, whatever the latents' dtype) and keeps its states at the
    grid indices in ``keep`` (the final one included)."""
    states = {}
    report = progress(callback, "teacher", len(grid) - 1)

    def record(info):
        if info["i"] in keep:
            states[info["i"]] = info["x"]
        if report is not None:
            report(info)

    final = get_solver(teacher).fn(model, x, grid, extra_args=extra_args, callback=record, disable=disable)
    states[len(grid) - 1] = final
    return states, final


def distill(model, x, sigmas, sampler="euler", teacher=DEFAULT_TEACHER, scale=DEFAULT_SCALE, extra_args=None,
            callback=None, first_step=DEFAULT_FIRST_STEP, clamp=None, compare_stock=False, disable=None, flow=False):
    """Fits one λ per network evaluation of ``sampler`` on ``sigmas`` for the batch ``x`` (initial noisy latents).

    Runs ``teacher`` on a refined grid (``scale`` sub-steps per interval), then the student once, solving each λ in
    closed form. ``first_step="none"`` leaves the first evaluation uncorrected (it has no previous output);
    ``"x"`` uses the initial state as the previous output and fits λ_0 too. ``clamp`` bounds |λ|.
    ``compare_stock=True`` also runs the stock student (one more student run) to report its distance.
    ``callback`` receives ``{"phase": "teacher" | "stock" | "student", "i": ..., "total": ..., "x": ..., "denoised":
    ...}`` (the last two: the sampler's state and model output at that step).
    ``flow`` is the student's rectified-flow option (see dode.sample); the teacher integrates in σ and ignores it."""
    check_fit_args(sampler, teacher, scale, first_step, clamp)
    check_sigmas(sigmas, min_steps=2)
    check_batch(x)
    start = time.perf_counter()
    solver = get_solver(sampler)
    landings = landing_sigmas(sampler, sigmas, flow).double().cpu()
    grid = teacher_grid(sigmas, landings, scale)
    keep = {int((grid - s).abs().argmin()) for s in landings.tolist()}
    states, teacher_final = run_teacher(model, x, grid.to(sigmas.device, sigmas.dtype), teacher, extra_args, callback,
                                        disable, keep)
    targets = TeacherTargets(grid, states)
    report = FitReport(teacher_nfe=nfe(teacher, grid), student_nfe=len(landings))
    if compare_stock:
        stock = LambdaFit(targets, report, fit=False)
        solver.fn(model, x, sigmas, extra_args=extra_args, callback=progress(callback, "stock", len(sigmas) - 1),
                  disable=disable, lambdas=stock, **flow_option(solver, flow))
        report.rmse_stock = stock.last[0]
    fit = LambdaFit(targets, report, first_step=first_step, clamp=clamp)
    samples = solver.fn(model, x, sigmas, extra_args=extra_args, callback=progress(callback, "student", len(sigmas) - 1),
                        disable=disable, lambdas=fit, **flow_option(solver, flow))
    report.rmse_before, report.rmse_after = fit.last
    report.seconds = time.perf_counter() - start
    return DistillResult(lambdas=torch.tensor(fit.lambdas, dtype=torch.float64), sampler=sampler,
                         sigmas=sigmas.detach().double().cpu(), teacher=teacher, scale=scale, first_step=first_step,
                         samples=samples, teacher_samples=teacher_final, report=report)
