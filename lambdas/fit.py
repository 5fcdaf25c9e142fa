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
from .calls import CountedModel, SigmaLog
from .final import DEFAULT_JACOBIAN_BATCH, FinalOptions, fit_final
from .schema import OBJECTIVES, LambdaEntry
from .teacher import DEFAULT_SCALE, DEFAULT_TEACHER, host_teacher_grid, progress, run_teacher, teacher_grid
FINAL_SCALE = 10
FINAL_BUDGET, SCHEDULE_BUDGET = 2.5, 6.0  # a final fit's network rows, teacher included, in greedy fits
FINAL_DETAIL, SCHEDULE_DETAIL = 0.0, 1.0  # the detail term's weight (lambdas/final.py), measured: README
DEFAULT_OBJECTIVE = "final"
FIRST_STEP_MODES = ("none", "x")
DEFAULT_FIRST_STEP = "none"
DEGENERATE_RATIO = 1e-4  # a direction under this fraction of the step needs a huge, ill-conditioned λ: skip it
RELIABLE_LATENTS = 16  # the fewest fit latents that stay near a 256-latent fit (docs/benchmarks.md, fit batch)


@dataclass
class FitReport:
    """What the fit did: λ per network evaluation, the distances to the teacher and the fit's cost.

    ``steps`` has one row per evaluation: ``eval``, ``sigma`` (the noise level the network is called at), ``lands``
    (the noise level of the state its λ corrects), ``lambda`` and, for the greedy fit, ``rmse_before`` / ``rmse_after``
    (distance to the teacher's state there with λ_i = 0 / with the fitted λ_i). ``rmse_stock`` and ``rmse_after`` are
    the final sample's distances to the teacher's over the fit batch, for λ = 0 on the input grid and for the fit
    (the greedy fit measures the stock one only with ``compare_stock=True``). ``network_calls`` counts every network
    call of the fit, the teacher's included, and ``network_rows`` the latents those calls evaluated. The final fit
    also gives ``start`` (the start its answer came from), ``starts`` (each screened start's distance at λ = 0 and,
    where it got one, after its short fit and after the runoff of the two best), ``noise_floor`` (the measured σ of
    the residual's noise) and ``fd_steps`` (the difference step of each parameter)."""
    objective: str = "greedy"
    schedule: str = "given"
    steps: list = field(default_factory=list)
    trials: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    rmse_before: float = math.nan
    rmse_after: float = math.nan
    rmse_stock: float = math.nan
    teacher_nfe: int = 0
    student_nfe: int = 0
    network_calls: int = 0
    network_rows: int = 0
    seconds: float = 0.0
    start: str = ""
    starts: list = field(default_factory=list)
    noise_floor: float = math.nan
    fd_steps: list = field(default_factory=list)

    def table(self):
        """A plain-text table of the fit, one row per network evaluation, then the distances and the cost."""
        greedy = self.objective == "greedy"
        head = f"{'eval':>4} {'evaluates at σ':>14} {'corrects x at σ':>15} {'λ':>9}"
        rows = [head + (f" {'rmse λ_i=0':>10} {'rmse λ_i':>10}" if greedy else "")]
        for s in self.steps:
            row = f"{s['eval']:>4} {s['sigma']:>14.4g} {s['lands']:>15.4g} {s['lambda']:>9.4f}"
            if greedy and "rmse_before" in s:
                row += f" {s['rmse_before']:>10.5f} {s['rmse_after']:>10.5f}"
            rows.append(row)
        if greedy:
            rows.append("(rmse λ_i=0 / rmse λ_i: distance to the teacher's state at the σ it corrects, without / with "
                        "that evaluation's λ)")
        rows.append(self.summary())
        if self.starts:
            rows.append(self.search())
        rows += [f"warning: {w}" for w in self.warnings]
        return "\n".join(rows)

    def search(self):
        """One line: the starts screened, the one continued, the noise floor and the difference steps."""
        starts = ", ".join(f"{s['start']} {s['rmse']:.4f}" + "".join(f" → {s[k]:.4f}" for k in ("fitted", "runoff")
                                                                       if k in s) for s in self.starts)
        steps = ", ".join(f"{v:.2g}" for v in self.fd_steps)
        return (f"starts (RMSE at λ = 0 → after a short fit → after the runoff): {starts}; "
                f"continued from: {self.start or 'none'}; noise floor {self.noise_floor:.3g}; difference steps {steps}")

    def summary(self):
        """One line: the distance to the teacher's final sample before and after, and what the fit cost."""
        stock = "not measured (compare_stock=True)" if math.isnan(self.rmse_stock) else f"{self.rmse_stock:.5f}"
        kind = "λ and σ schedule" if self.schedule == "fitted" else "λ"
        return (f"{kind} fitted ({self.objective} objective); RMSE to the teacher's final sample on the fit batch: "
                f"stock {stock} → D-ODE {self.rmse_after:.5f}; {self.network_calls} network calls "
                f"({self.network_rows} latent rows), {self.seconds:.2f} s")


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
            self.report.steps.append({"eval": i, "lands": float(sigma_next), "lambda": lam,
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
    """Fitted λ (and σ grid) and everything needed to use, save and judge it. ``sigmas`` is the grid to sample with:
    the fitted one for ``schedule == "fitted"``, else ``input_sigmas``, the grid the fit was given."""
    lambdas: torch.Tensor
    sampler: str
    sigmas: torch.Tensor
    teacher: str
    scale: int
    first_step: str
    samples: torch.Tensor
    teacher_samples: torch.Tensor
    report: FitReport
    objective: str = "greedy"
    schedule: str = "given"
    input_sigmas: torch.Tensor = None

    def entry(self, model="", cfg=None, aliases=(), **extra):
        """This fit as a λ-file entry for ``model`` (a host-supplied identity, plus ``aliases`` of the same model) and
        CFG scale ``cfg``; ``extra`` goes into the metrics."""
        metrics = {"rmse_stock": self.report.rmse_stock, "rmse_dode": self.report.rmse_after,
                   "batch": int(self.samples.shape[0]), "fit_seconds": round(self.report.seconds, 3),
                   "network_calls": self.report.network_calls, "network_rows": self.report.network_rows, **extra}
        metrics = {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}
        return LambdaEntry(sampler=self.sampler, sigmas=self.sigmas, lambdas=self.lambdas, model=model,
                           aliases=list(aliases), cfg=cfg, teacher=self.teacher, scale=self.scale,
                           first_step=self.first_step, schedule=self.schedule, objective=self.objective,
                           metrics=metrics)


def small_batch(latents):
    """What a host tells the user before a fit on ``latents`` latents, or None from RELIABLE_LATENTS on."""
    if latents >= RELIABLE_LATENTS:
        return None
    return (f"fitting on {latents} latent{'' if latents == 1 else 's'}; a fit on fewer than {RELIABLE_LATENTS} may "
            "not hold for other seeds and prompts (on 4, one fit in five lands about twice as far from the "
            "converged result)")


def check_fit_args(sampler, teacher, scale, first_step, clamp, objective, schedule, budget, detail):
    get_solver(sampler)
    get_solver(teacher)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(map(repr, OBJECTIVES))}, got {objective!r}")
    if schedule and objective != "final":
        raise ValueError("schedule=True fits the σ grid to the final sample, so it needs objective='final' "
                         f"(got {objective!r})")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer ≥ 1 (teacher sub-steps per student interval), got {scale!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"budget must be a positive number (the final fit's network rows in units of the greedy "
                         f"fit's), got {budget!r}")
    if isinstance(detail, bool) or not isinstance(detail, (int, float)) or not 0 <= detail < math.inf:
        raise ValueError(f"detail must be a finite weight ≥ 0 (0 fits the distance alone), got {detail!r}")
    if detail and objective == "greedy":
        raise ValueError("detail weighs a term of the final-sample objective, and the greedy fit has none: pass "
                         "objective='final', or leave detail unset")
    if first_step not in FIRST_STEP_MODES:
        raise ValueError(f"first_step must be one of {FIRST_STEP_MODES}, got {first_step!r}")
    if clamp is not None and not clamp > 0:
        raise ValueError(f"clamp must be a positive bound on |λ| or None, got {clamp!r}")


def check_grid(sigmas, schedule, sigma_range):
    """The σ grid a fit needs: ≥ 2 steps (≥ 1 interior σ to move for a schedule), inside the host's σ range."""
    if schedule and torch.is_tensor(sigmas) and sigmas.ndim == 1 and len(sigmas) == 2:
        raise ValueError("schedule=True moves the interior noise levels of the grid, and a 1-step grid has none; "
                         "pass at least 2 steps")
    check_sigmas(sigmas, min_steps=2)
    if sigma_range is None:
        return 0.0
    low, high = (float(v) for v in sigma_range)
    if not (0 <= low < high and math.isfinite(high)):
        raise ValueError(f"sigma_range must be (σ_min, σ_max) with 0 ≤ σ_min < σ_max, got {sigma_range!r}")
    positive = sigmas.detach().double().cpu()
    positive = positive[positive > 0]
    if positive.max() > high * (1 + 1e-5) or positive.min() < low * (1 - 1e-5):
        raise ValueError(f"the σ grid spans [{float(positive.min()):.4g}, {float(positive.max()):.4g}] but the model "
                         f"can use σ in [{low:.4g}, {high:.4g}]; build the grid from the model's own schedule "
                         "(its σ_min and σ_max)")
    return low


def distill_greedy(model, x, sigmas, sampler, teacher, scale, extra_args, callback, first_step, clamp,
                   compare_stock, disable, flow, report):
    """The paper's fit: each λ_i in closed form against the teacher's state where its evaluation lands."""
    solver = get_solver(sampler)
    landings = landing_sigmas(sampler, sigmas, flow).double().cpu()
    grid = teacher_grid(sigmas, landings, scale)
    keep = {int((grid - s).abs().argmin()) for s in landings.tolist()}
    states, teacher_final = run_teacher(model, x, host_teacher_grid(grid, sigmas), teacher, extra_args, callback,
                                        disable, keep)
    targets = TeacherTargets(grid, states)
    report.teacher_nfe, report.student_nfe = nfe(teacher, grid), len(landings)
    if compare_stock:
        stock = LambdaFit(targets, report, fit=False)
        solver.fn(model, x, sigmas, extra_args=extra_args, callback=progress(callback, "stock", len(sigmas) - 1),
                  disable=disable, lambdas=stock, **flow_option(solver, flow))
        report.rmse_stock = stock.last[0]
    fit = LambdaFit(targets, report, first_step=first_step, clamp=clamp)
    evaluated = SigmaLog(model)
    samples = solver.fn(evaluated, x, sigmas, extra_args=extra_args,
                        callback=progress(callback, "student", len(sigmas) - 1), disable=disable, lambdas=fit,
                        **flow_option(solver, flow))
    for row, sigma in zip(report.steps, evaluated.sigmas):
        row["sigma"] = sigma
    report.rmse_before, report.rmse_after = fit.last
    return torch.tensor(fit.lambdas, dtype=torch.float64), sigmas, samples, teacher_final


def distill(model, x, sigmas, sampler="euler", teacher=DEFAULT_TEACHER, scale=None, extra_args=None,
            callback=None, first_step=DEFAULT_FIRST_STEP, clamp=None, compare_stock=False, disable=None, flow=False,
            objective=DEFAULT_OBJECTIVE, schedule=False, sigma_range=None, budget=None,
            jacobian_batch=DEFAULT_JACOBIAN_BATCH, detail=None):
    """Fits one λ per network evaluation of ``sampler`` on ``sigmas`` for the batch ``x`` (initial noisy latents).

    ``objective="final"`` fits every λ to the teacher's final sample (lambdas/final.py); ``"greedy"`` is the paper's
    fit, each λ in closed form against the teacher's state where its evaluation lands. ``schedule=True`` also fits the
    interior σ's of the grid (the first and final σ are kept; it implies ``"final"``); ``sigma_range=(σ_min, σ_max)``
    is what the host's model can use: the grid must lie inside it and a fitted grid stays inside it.
    The teacher runs on the grid refined into ``scale`` sub-steps per interval (default: DEFAULT_SCALE for greedy,
    FINAL_SCALE for final). ``first_step="none"`` leaves the first evaluation uncorrected (it has no previous
    output); ``"x"`` uses the initial state as the previous output and fits λ_0 too. ``clamp`` bounds |λ|.
    ``compare_stock=True`` makes the greedy fit run the stock student too (one more run) to report its distance; the
    final fit always measures it. ``budget`` bounds the final fit's network rows, its teacher included, in units of
    what the greedy fit would cost on the same batch (default FINAL_BUDGET, or SCHEDULE_BUDGET with a schedule);
    ``jacobian_batch`` bounds the latents each of its Jacobians is taken on, and ``detail`` weighs its detail term
    (each sample's ‖∇x‖ against its teacher's, lambdas/final.py; default SCHEDULE_DETAIL with a schedule, else
    FINAL_DETAIL = 0: the distance alone).
    ``callback`` receives ``{"phase": "teacher" | "stock" | "student" | "fit", "i": ..., "total": ..., "x": ...,
    "denoised": ...}``: per teacher/student step (the sampler's state and model output) and, for the final fit, per
    optimisation step (``i`` / ``total``: network rows spent of the budget; ``x`` and ``denoised``: the fit's
    current final samples).
    ``flow`` is the student's rectified-flow option (see dode.sample); the teacher integrates in σ and ignores it."""
    scale = (DEFAULT_SCALE if objective == "greedy" else FINAL_SCALE) if scale is None else scale
    budget = (SCHEDULE_BUDGET if schedule else FINAL_BUDGET) if budget is None else budget
    if detail is None:
        detail = SCHEDULE_DETAIL if schedule else FINAL_DETAIL if objective == "final" else 0.0
    check_fit_args(sampler, teacher, scale, first_step, clamp, objective, schedule, budget, detail)
    floor = check_grid(sigmas, schedule, sigma_range)
    check_batch(x)
    start = time.perf_counter()
    counted = CountedModel(model)
    report = FitReport(objective=objective, schedule="fitted" if schedule else "given")
    if objective == "greedy":
        lambdas, grid, samples, target = distill_greedy(counted, x, sigmas, sampler, teacher, scale, extra_args,
                                                        callback, first_step, clamp, compare_stock, disable, flow,
                                                        report)
    else:
        options = FinalOptions(sampler, teacher, scale, extra_args, callback, first_step, clamp, disable, flow,
                               schedule, floor, budget, jacobian_batch, detail)
        lambdas, grid, samples, target = fit_final(counted, x, sigmas, options, report)
    report.network_calls, report.network_rows = counted.calls, counted.rows
    report.seconds = time.perf_counter() - start
    return DistillResult(lambdas=lambdas, sampler=sampler, sigmas=grid.detach().double().cpu(), teacher=teacher,
                         scale=scale, first_step=first_step, samples=samples, teacher_samples=target, report=report,
                         objective=objective, schedule=report.schedule, input_sigmas=sigmas.detach().double().cpu())
