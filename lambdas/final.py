"""λ, and optionally the σ schedule, fitted to what the user sees: the teacher's final sample.

    L(θ) = mean_b [ ‖x_N^b(θ) − x_teacher^b‖² + w (‖∇x_N^b‖ − ‖∇x_teacher^b‖)² ] / D,

θ the λ of every corrected evaluation and, with a schedule, the interior σ's (lambdas/grids.py); minimised without
autograd by Levenberg–Marquardt, δ = −(JᵀJ + μ diag(JᵀJ))⁻¹ Jᵀ r, with finite-difference Jacobians, from the best
of several screened starts. Each difference step is the smallest whose change clears the model's measured noise
floor (central where the floor set it). Design and measurements: docs/architecture.md, docs/benchmarks.md.
"""
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..samplers import flow_option, get_solver, landing_sigmas, nfe
from .calls import ReplayModel, Trajectory
from .grids import DenoisedPath, ScheduleMap, start_grids
from .teacher import greedy_rows, host_teacher_grid, run_teacher, teacher_grid

MAX_TRIALS = 200  # a hard stop; the row budget ends a fit long before
DEFAULT_JACOBIAN_BATCH = 32
FD_STEP = 1e-2  # the first forward-difference step in λ and the schedule logits
FD_REFINEMENTS = 2  # how often the steps may shrink tenfold when a fresh Jacobian gives no descent
MAX_FD_STEP = 0.5  # the largest step a noisy model's difference may take
NOISE_MARGIN = 10.0  # a difference is taken with a step whose change is this many times the noise floor
SIGNAL_MARGIN = 2.0  # a column whose change stays under this many times the floor is noise (not used)
NOISE_PROBES = (0, 1e-3, 2e-3, 3e-3, 4e-3)  # where along one parameter the noise floor is measured (a smooth
# model is quadratic to ~1e-8 there; half-precision rounding is not)
SHORT_FIT_TRIALS = 4  # whole-batch trials a short fit is sized for, besides its Jacobian
SCREENING_SHARE = 0.25  # the most of the fit budget the short fits take together
RUNOFF_SHARE = 0.2  # of the fit budget, for each of the two best short fits before the better one gets the rest
SHORT_JACOBIAN_BATCH = 8  # latents a short fit's Jacobians are taken on
NOISE_BATCH = 4  # latents the noise floor is measured on
GRAM_PARTS = 8  # the float32 Jacobian is turned to float64 in this many row blocks, one at a time
JACOBIAN_LATENTS = 2.0  # the most memory a Jacobian takes, in latent batches, once it has MIN_JACOBIAN_ROWS rows
MIN_JACOBIAN_ROWS = 1 << 16  # a Jacobian keeps every residual element up to this many (every image fit does)
INITIAL_DAMPING = 1.0
MIN_DAMPING, MAX_DAMPING = 1e-6, 1e3
DIAG_FLOOR = 1.0
MIN_IMPROVEMENT = 1e-4  # relative decrease of L below which an accepted step ends the fit


class State(NamedTuple):
    """One evaluated θ: its loss L, the σ of each network call and the final sample (None and L = inf if rejected).
    A state keeps no call's output: a Jacobian at it traces its calls again (``FinalFit.trace``)."""
    theta: torch.Tensor
    loss: float
    sigmas: Any = None
    final: Any = None


@dataclass
class FinalOptions:
    """What a final-sample fit is asked to do (dode.distill's arguments)."""
    sampler: str
    teacher: str
    scale: int
    extra_args: dict = None
    callback: Any = None
    first_step: str = "none"
    clamp: float = None
    disable: bool = None
    flow: bool = False
    schedule: bool = False
    floor: float = 0.0
    budget: float = 2.5
    jacobian_batch: int = DEFAULT_JACOBIAN_BATCH
    detail: float = 0.0


def detail_norms(x):
    """Per latent ‖∇x_b‖ (float64): the norm of x's forward differences along its spatial axes, all stacked. x is
    (B, C, *spatial) as the samplers see it; the spatial axes are the last two ((B, C, H, W) images, (B, C, T, H, W)
    video frames) or the one of a sequence (B, C, L); never the channel axis. None for (B, D), which has none. Summed
    a channel at a time, so that only one channel is ever in float64."""
    if x.ndim < 3:
        return None
    axes = list(reversed(range(max(1, x.ndim - 3), x.ndim - 1)))  # of one channel (B, *spatial); width first
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for channel in x.unbind(1):
        channel = channel.double()
        for axis in axes:
            total += torch.linalg.vector_norm(channel.diff(dim=axis).flatten(1), dim=1).square()
    return total.sqrt()


def picked(r, elements):
    """r at ``elements`` (all of it for None; None stays None)."""
    return r if r is None or elements is None else r[elements]


def minus(r, base):
    """r − base, in place (r is a fresh residual); None stays None."""
    return None if r is None else r.sub_(base)


def finite_row(row):
    """``row``, or ValueError for a probe that gave none (an unusable grid) or a non-finite one."""
    if row is None or not torch.isfinite(row).all():
        raise ValueError("a noise probe is unusable or not finite")
    return row


def slice_rows(extra_args, rows, batch):
    """``extra_args`` for a sub-batch: top-level tensors whose first dimension is the batch are sliced to ``rows``."""
    return {k: v[rows] if torch.is_tensor(v) and v.ndim and v.shape[0] == batch else v for k, v in extra_args.items()}


def quadratic_noise(residuals, t):
    """σ of the noise in the rows ``residuals`` (one per t, any iterable of 1-D float64 tensors): the RMS of their
    deviation from the best quadratic in t, unbiased (len(t) − 3 degrees of freedom per element). The deviation's
    square sum is ‖Qᵀ R‖² with Q an orthonormal basis of the quadratics' complement in t, summed row by row."""
    t = torch.tensor(t, dtype=torch.float64)
    basis = torch.stack([torch.ones_like(t), t, t * t], 1)
    complement = torch.linalg.qr(basis, mode="complete").Q[:, 3:]
    combos = None
    for row, weights in zip(residuals, complement.tolist()):
        combos = [row * w for w in weights] if combos is None else [c.add_(row, alpha=w) for c, w in zip(combos, weights)]
    return math.sqrt(sum(torch.dot(c, c).item() for c in combos) / (combos[0].numel() * (len(t) - 3)))


class FinalFit:
    """The parameters, the solver runs and the Levenberg–Marquardt loop of one final-sample fit."""

    def __init__(self, model, x, sigmas, sampler, target, extra_args=None, flow=False, first_step="none",
                 schedule=None, jacobian_batch=DEFAULT_JACOBIAN_BATCH, clamp=None, detail=0.0):
        self.model, self.x, self.sigmas, self.target = model, x, sigmas, target
        self.target_detail = detail_norms(target) if detail else None
        self.detail_scale = math.sqrt(detail)
        self.solver = get_solver(sampler)
        self.extra_args = {} if extra_args is None else extra_args
        self.flow = flow
        self.schedule = schedule
        self.clamp = clamp
        self.n_lambdas = nfe(sampler, sigmas)
        self.free = list(range(1 if first_step == "none" else 0, self.n_lambdas))
        self.size = len(self.free) + (schedule.size if schedule is not None else 0)
        self.residual_size = x.numel() + (x.shape[0] if self.target_detail is not None else 0)
        self.jacobian_batch = jacobian_batch
        self.shared_calls = 1 if schedule is not None else min(self.free, default=self.n_lambdas - 1) + 1
        self.head = None  # the stock run's first shared_calls calls: every θ's run starts with them
        self.rows = None
        self.elements = None
        self.jacobians = 0
        self.steps = torch.full((self.size,), FD_STEP, dtype=torch.float64)
        self.min_steps = torch.zeros(self.size, dtype=torch.float64)
        self.refinements = 0
        self.row_cost = self.size * self.n_lambdas / 2  # network rows per Jacobian row, until one is measured
        self.trial_rows = 0  # the most network rows one whole-batch trial has taken (0: none measured yet)
        self.noise = 0.0
        self.swamped = False
        self.best = None
        self.bound = math.inf
        self.history = []

    def unpack(self, theta):
        """(λ vector, σ grid in the host's dtype) for parameters θ."""
        lambdas = [0.0] * self.n_lambdas
        for k, value in zip(self.free, theta[:len(self.free)].tolist()):
            lambdas[k] = value
        if self.schedule is None or (self.schedule.exact and not theta[len(self.free):].any()):
            return lambdas, self.sigmas
        grid = self.schedule.sigmas(theta[len(self.free):])
        return lambdas, grid.to(self.sigmas.device, self.sigmas.dtype)

    def run(self, theta, rows=None, replay=None, record=None, stock=False):
        """The student's final sample for θ (on ``rows`` of the batch, or all of it); ``stock``: λ = 0 on the user's
        grid, whatever θ."""
        lambdas, sigmas = ([0.0] * self.n_lambdas, self.sigmas) if stock else self.unpack(theta)
        x, extra = self.x, self.extra_args
        if rows is not None:
            x, extra = x[rows], slice_rows(extra, rows, self.x.shape[0])
        model = ReplayModel(self.model, replay, rows, record, lambdas)
        return self.solver.fn(model, x, sigmas, extra_args=extra, disable=True, lambdas=lambdas,
                              **flow_option(self.solver, self.flow))

    def residual(self, final, rows=None):
        """r per latent (on ``rows``, or all): x_N − x_teacher, then √w (‖∇x_N‖ − ‖∇x_teacher‖) if there is a
        detail term; flattened, latent after latent."""
        target = self.target if rows is None else self.target[rows]
        flat = final.flatten(1)
        detail = self.target_detail is not None
        r = torch.empty(flat.shape[0], flat.shape[1] + detail, dtype=torch.float64, device=final.device)
        r[:, :flat.shape[1]].copy_(flat).sub_(target.flatten(1))
        if detail:
            target_detail = self.target_detail if rows is None else self.target_detail[rows]
            r[:, -1] = self.detail_scale * (detail_norms(final) - target_detail)
        return r.flatten()

    def distance(self, final):
        """The RMSE of a final sample to the teacher's over the whole batch (no detail term)."""
        return (final.double() - self.target.double()).square().mean().sqrt().item()

    def usable(self, theta):
        """False if θ's grid is not strictly decreasing once rounded to the host's σ dtype (e.g. float16)."""
        grid = self.unpack(theta)[1].double()
        return bool((grid[1:] < grid[:-1]).all())

    def evaluate(self, theta, stock=False):
        """θ's State on the whole batch, L the mean square of the residual; L = inf for a non-finite result or a
        grid the host's σ dtype cannot hold (then nothing runs). The first evaluation keeps its head of shared
        calls, which every later run replays."""
        if not stock and not self.usable(theta):
            return State(theta, math.inf)
        trajectory = Trajectory(outputs=self.head is None)
        final = self.run(theta, replay=self.head, record=trajectory, stock=stock)
        if self.head is None:
            self.head = trajectory.head(self.shared_calls)
        loss = self.residual(final).square().mean().item()
        return State(theta, loss if math.isfinite(loss) else math.inf, trajectory.sigmas(), final)

    def trace(self, theta, rows=None):
        """(Trajectory with every call's output, r) of θ's run on ``rows`` (or the whole batch): what the
        probes of a Jacobian or a noise measurement at θ replay, and their base residual."""
        trajectory = Trajectory()
        final = self.run(theta, rows, self.head, trajectory)
        return trajectory, self.residual(final, rows)

    def rows_for(self, index):
        """The rows Jacobian number ``index`` is taken on: all of them, or the next ``jacobian_batch`` in turn."""
        batch = self.x.shape[0]
        if batch <= self.jacobian_batch:
            return None
        start = (index * self.jacobian_batch) % batch
        return ((torch.arange(self.jacobian_batch) + start) % batch).to(self.x.device)

    def probed(self, theta, trace, rows, k, step):
        """r on ``rows`` after θ_k += step (the unchanged head replayed from ``trace``, θ's calls on those rows);
        None for an unusable grid."""
        theta = theta.clone()
        theta[k] += step
        if not self.usable(theta):
            return None
        return self.residual(self.run(theta, rows, trace), rows)

    def measure_noise(self, state):
        """The noise floor σ of r on NOISE_BATCH latents (on the elements a Jacobian of them would keep): r(θ + t e_p)
        for t in NOISE_PROBES, p the parameter acting earliest, against its best quadratic in t. 0 when the probes
        are not all finite and usable."""
        size = min(NOISE_BATCH, self.jacobian_batch)
        rows = None if self.x.shape[0] <= size else torch.arange(size).to(self.x.device)
        elements = self.jacobian_elements(self.residual_elements(min(size, self.x.shape[0])))
        p = len(self.free) if self.schedule is not None else 0
        trace, base = self.trace(state.theta, rows)
        probes = (picked(base if t == 0 else self.probed(state.theta, trace, rows, p, t), elements)
                  for t in NOISE_PROBES)
        try:
            self.noise = quadratic_noise(map(finite_row, probes), NOISE_PROBES)
        except ValueError:
            return 0.0
        return self.noise

    def residual_elements(self, latents):
        """The length of the residual of ``latents`` latents."""
        return self.residual_size // self.x.shape[0] * latents

    def jacobian_elements(self, count):
        """The elements of a ``count``-element residual a Jacobian keeps: all of them, or, where their float32 columns
        would take more than JACOBIAN_LATENTS latent batches and more than MIN_JACOBIAN_ROWS rows, a random subset of
        the larger of the two sizes (another for every Jacobian)."""
        keep = max(int(JACOBIAN_LATENTS * self.x.numel() / self.size), MIN_JACOBIAN_ROWS)
        if count <= keep:
            return None
        generator = torch.Generator().manual_seed(self.jacobians)
        return torch.randperm(count, generator=generator)[:keep].sort().values.int().to(self.x.device)

    def jacobian(self, state):
        """∂r/∂θ on the Jacobian rows (and elements) by forward differences (float64 columns, stored in float32),
        each run replaying the unchanged head of the state's calls traced on those rows. A column whose change stays
        under NOISE_MARGIN × the noise floor is retaken with a larger step (kept for later Jacobians) and, with such
        a noise-set step, as a central difference (r(θ + h) − r(θ − h)) / 2h (error O(h²) at the large step the
        noise needs); a column still under SIGNAL_MARGIN × the floor, or not finite, is 0: that direction is not
        used. ``swamped`` says whether every column was."""
        self.rows = self.rows_for(self.jacobians)
        batch = self.x.shape[0] if self.rows is None else len(self.rows)
        self.elements = self.jacobian_elements(self.residual_elements(batch))
        trace, base = self.trace(state.theta, self.rows)
        self.jacobians += 1

        def probed(k, step):
            return picked(self.probed(state.theta, trace, self.rows, k, step), self.elements)

        base = picked(base, self.elements)
        floor = math.sqrt(2 * base.numel()) * self.noise
        columns, used = base.new_zeros(base.numel(), self.size, dtype=torch.float32), 0
        for k in range(self.size):
            step = float(self.steps[k])
            change = minus(probed(k, step), base)
            if change is not None and floor > 0 and change.norm() < NOISE_MARGIN * floor and step < MAX_FD_STEP:
                step = min(MAX_FD_STEP, step * NOISE_MARGIN * floor / max(float(change.norm()), floor / 100))
                self.steps[k] = self.min_steps[k] = step
                change = None
                change = minus(probed(k, step), base)
            if change is None or not torch.isfinite(change).all() or change.norm() <= SIGNAL_MARGIN * floor:
                continue
            back = probed(k, -step) if self.min_steps[k] > 0 else None
            central = back is not None and bool(torch.isfinite(back).all())
            columns[:, k] = change.add_(base).sub_(back).div_(2 * step) if central else change.div_(step)
            change = back = None
            used += 1
        self.swamped = used == 0 and floor > 0
        return columns

    def project(self, theta):
        if self.clamp is not None:
            theta[:len(self.free)] = theta[:len(self.free)].clamp(-self.clamp, self.clamp)
        return theta

    def consider(self, state):
        """Keeps ``state`` as the fit's answer if it has the lowest L so far among the states strictly closer to the
        teacher than ``bound`` (the stock sampler's distance: the detail term never buys detail with distance)."""
        if math.isfinite(state.loss) and self.distance(state.final) < self.bound:
            if self.best is None or state.loss < self.best.loss:
                self.best = state

    def loss_noise(self, state):
        """How much L can move from the noise floor alone: 2√2 σ √L / √n."""
        return 2 * math.sqrt(2) * self.noise * math.sqrt(state.loss) / math.sqrt(self.residual_size)

    def optimise(self, start, budget, progress=None):
        """Levenberg–Marquardt from the State ``start`` until it converges or has spent ``budget`` network rows;
        every state reached goes through ``consider``; returns the last accepted state. A Jacobian is taken only if
        its cost (network rows per row, as the last one measured) and one trial fit in what is left.

        Damping follows Nielsen's rule (μ × max(1/3, 1 − (2ρ − 1)³) after a step with actual/predicted decrease ρ;
        × 2, 4, 8, … after rejected ones). After an accepted step J gets Broyden's update J += (Δr − J δ) δᵀ / δᵀδ; a
        rejected step on an updated J takes a fresh J. A fresh J with no accepted step even at MAX_DAMPING shrinks the
        steps tenfold (not below a column's noise-safe step), FD_REFINEMENTS times at most. A step is accepted when L
        falls by more than the noise floor can move it. ``progress(trial, final)`` follows each trial."""
        state = start
        del start  # the caller passes its only reference: the start is freed once a step is accepted
        self.consider(state)
        if not math.isfinite(state.loss):
            return state
        spent = self.model.rows
        jac, fresh, damping, growth = None, False, INITIAL_DAMPING, 2
        for trial in range(MAX_TRIALS):
            if jac is None:
                rows = self.x.shape[0] if self.rows_for(self.jacobians) is None else self.jacobian_batch
                if self.model.rows - spent + self.row_cost * rows + self.trial_rows > budget:
                    break
                before = self.model.rows
                jac, fresh = self.jacobian(state), True
                self.row_cost = (self.model.rows - before) / rows
                if self.swamped:
                    break
            if self.trial_rows and self.model.rows - spent + self.trial_rows > budget:
                break
            r_rows = self.on_rows(self.residual(state.final))
            delta = lm_step(jac, r_rows, damping)
            if not torch.isfinite(delta).all():
                break
            before = self.model.rows
            candidate = self.evaluate(self.project(state.theta + delta))
            self.trial_rows = max(self.trial_rows, self.model.rows - before)
            predicted = (r_rows.square().sum() - (r_rows + applied(jac, delta)).square().sum()).item() / len(r_rows)
            gain = (state.loss - candidate.loss) / predicted if predicted > 0 else -1.0
            accepted = candidate.loss < state.loss - self.loss_noise(state)
            lambdas, grid = self.unpack(candidate.theta)
            self.history.append({"trial": trial, "loss": candidate.loss,
                                 "rmse": self.distance(candidate.final) if math.isfinite(candidate.loss) else math.inf,
                                 "accepted": accepted, "damping": damping, "rows": self.model.rows - spent,
                                 "lambdas": lambdas, "sigmas": grid.tolist()})
            if progress is not None:
                progress(trial, candidate.final if accepted else state.final)
            if not accepted:
                candidate = None  # freed before a Jacobian or the next candidate runs
            if accepted:
                improvement = (state.loss - candidate.loss) / state.loss
                jac = broyden(jac, self.on_rows(self.residual(candidate.final)) - r_rows, delta)
                state = candidate
                self.consider(state)
                fresh, damping, growth = False, max(damping * max(1 / 3, 1 - (2 * gain - 1) ** 3), MIN_DAMPING), 2
                if improvement < MIN_IMPROVEMENT:
                    break
            elif not fresh:
                jac = None
            elif damping < MAX_DAMPING:
                damping, growth = damping * growth, growth * 2
            elif self.refine_steps():
                jac, damping, growth = None, INITIAL_DAMPING, 2
            else:
                break
        return state

    def refine_steps(self):
        """Shrinks the difference steps tenfold, none below its noise-safe step; False when none can shrink."""
        if self.refinements >= FD_REFINEMENTS:
            return False
        smaller = torch.maximum(self.steps / 10, self.min_steps)
        if torch.equal(smaller, self.steps):
            return False
        self.steps, self.refinements = smaller, self.refinements + 1
        return True

    def on_rows(self, r):
        """The part of a whole-batch residual on the Jacobian rows and elements."""
        return picked(r if self.rows is None else r.view(self.x.shape[0], -1)[self.rows].flatten(), self.elements)


def gram(jac, r):
    """(JᵀJ, Jᵀr) in float64 for a float32 J, GRAM_PARTS row blocks at a time."""
    normal = torch.zeros(jac.shape[1], jac.shape[1], dtype=torch.float64, device=jac.device)
    projected = normal.new_zeros(jac.shape[1])
    for rows, part in zip(jac.chunk(GRAM_PARTS), r.chunk(GRAM_PARTS)):
        rows = rows.double()
        normal.addmm_(rows.T, rows)
        projected.addmv_(rows.T, part)
    return normal, projected


def applied(jac, delta):
    """J δ in float64 for a float32 J, GRAM_PARTS row blocks at a time."""
    delta = delta.to(jac.device)
    return torch.cat([rows.double() @ delta for rows in jac.chunk(GRAM_PARTS)])


def lm_step(jac, r, damping):
    """δ = −(JᵀJ + μ diag(JᵀJ))⁻¹ Jᵀ r in float64 (a tiny ridge keeps unidentifiable directions at 0)."""
    normal, projected = gram(jac, r)
    diag = normal.diagonal().clamp(min=DIAG_FLOOR * float(normal.diagonal().mean().clamp(min=1e-30)))
    system = normal + torch.diag(damping * diag + 1e-12 * float(diag.max()))
    return torch.linalg.solve(system, -projected).cpu()


def broyden(jac, change, delta):
    """Broyden's rank-one update of J, in place, after a step δ that changed r by ``change``: J += (Δr − J δ) δᵀ / δᵀδ."""
    update = (change - applied(jac, delta)).float()
    return jac.addr_(update, delta.to(jac), alpha=1 / delta.dot(delta).item())


def evaluation_rows(sigmas, lambdas, landings):
    """Report rows: per network evaluation, the σ it evaluates at, the σ its λ corrects, and λ."""
    return [{"eval": k, "sigma": sigma, "lands": float(lands), "lambda": float(lam)}
            for k, (sigma, lands, lam) in enumerate(zip(sigmas, landings.tolist(), lambdas))]


def short_fit_rows(fit):
    """The network rows one short fit is sized for: a Jacobian on SHORT_JACOBIAN_BATCH latents, SHORT_FIT_TRIALS
    whole-batch trials."""
    batch = fit.x.shape[0]
    return fit.row_cost * min(batch, fit.jacobian_batch, SHORT_JACOBIAN_BATCH) + SHORT_FIT_TRIALS * fit.n_lambdas * batch


def affordable_starts(fit, budget_rows):
    """How many starts get a short fit: as many as SCREENING_SHARE of the budget affords, at least one."""
    return max(1, int(SCREENING_SHARE * budget_rows // short_fit_rows(fit)))


def screened_starts(fit, schedule_map, starts, stock):
    """(name, State) of λ = 0 on each start grid, lowest L first."""
    screened = []
    for name, grid in starts.items():
        theta = torch.zeros(fit.size, dtype=torch.float64)
        if name != "user grid" or not schedule_map.exact:
            theta[len(fit.free):] = schedule_map.logits(grid)
        screened.append((name, stock if name == "user grid" and schedule_map.exact else fit.evaluate(theta)))
    return sorted(screened, key=lambda item: item[1].loss)


def short_fits(fit, starts, budget_rows, ticker):
    """A short fit from each of the best finite ``starts`` (name, State) that SCREENING_SHARE of the budget affords,
    each sized by ``short_fit_rows``: ([(name, State)] of the two best fits, lowest L first, or of the best start
    alone if only one is affordable; {name: the fit's RMSE to the teacher}). Empties ``starts`` and keeps at most
    three fits at a time, so that each start and each worse fit is freed once it is done."""
    pending = [(name, s) for name, s in starts[:affordable_starts(fit, budget_rows)] if math.isfinite(s.loss)]
    starts.clear()
    if len(pending) < 2:
        return pending, {}
    short, best, fitted = short_fit_rows(fit), [], {}
    full, fit.jacobian_batch = fit.jacobian_batch, min(fit.jacobian_batch, SHORT_JACOBIAN_BATCH)
    while pending:
        name, start = pending.pop(0)
        done = fit.optimise(start, short, ticker)
        del start
        fitted[name] = fit.distance(done.final)
        best = sorted(best + [(name, done)], key=lambda item: item[1].loss)[:2]
        del done
    fit.jacobian_batch = full
    return best, fitted


def runoff(fit, finalists, rows, ticker):
    """[(name, State)] of the two best short fits once each has continued for ``rows`` network rows, lowest L first
    (the finalist alone, as it is, if there is one); {name: its RMSE to the teacher after the runoff}. Empties
    ``finalists``. A short fit ranks basins by where they are after a few trials; one that falls slower at first can
    still end lower."""
    if len(finalists) < 2:
        alone = finalists[:1]
        finalists.clear()
        return alone, {}
    ran, done = {}, []
    while finalists:
        name = finalists[0][0]
        state = fit.optimise(finalists.pop(0)[1], rows, ticker)
        ran[name] = fit.distance(state.final)
        done.append((name, state))
        del state
    return sorted(done, key=lambda item: item[1].loss), ran


def fit_final(model, x, sigmas, options, report):
    """λ (and with ``options.schedule`` the interior σ's) fitted to the teacher's final sample: the teacher, stock,
    the screened starts, short fits from the best (``short_fits``), the runoff of the two best (``runoff``), then the
    rest of the budget from the better of those and what it leaves from the other. Returns (λ, grid, samples, teacher
    samples)."""
    o = options
    grid = teacher_grid(sigmas, sigmas, o.scale)
    path = DenoisedPath() if o.schedule else None
    _, target = run_teacher(model, x, host_teacher_grid(grid, sigmas), o.teacher, o.extra_args, o.callback,
                            o.disable, set(), path)
    teacher_rows = model.rows
    budget_rows = int(o.budget * greedy_rows(x, sigmas, o.sampler, o.teacher, o.flow)) - teacher_rows
    report.teacher_nfe, report.student_nfe = nfe(o.teacher, grid), nfe(o.sampler, sigmas)
    schedule_map = ScheduleMap(sigmas, o.floor) if o.schedule else None
    fit = FinalFit(model, x, sigmas, o.sampler, target, o.extra_args, o.flow, o.first_step, schedule_map,
                   o.jacobian_batch, o.clamp, o.detail)
    stock = fit.evaluate(torch.zeros(fit.size, dtype=torch.float64), stock=True)
    report.rmse_stock = fit.distance(stock.final)
    fit.bound = report.rmse_stock if math.isfinite(report.rmse_stock) else math.inf
    starts = [("user grid", stock)]
    if schedule_map is not None:
        starts = screened_starts(fit, schedule_map, start_grids(sigmas, grid, path.changes()), stock)
    spent = lambda: model.rows - teacher_rows  # noqa: E731
    ticker = None if o.callback is None else (
        lambda trial, final: o.callback({"phase": "fit", "i": min(spent(), budget_rows), "total": max(budget_rows, 1),
                                         "x": final, "denoised": final}))
    if math.isfinite(starts[0][1].loss):
        fit.measure_noise(starts[0][1])
    report.noise_floor = fit.noise
    report.starts = [{"start": name, "rmse": fit.distance(s.final) if math.isfinite(s.loss) else math.inf}
                     for name, s in starts]
    finalists, fitted = short_fits(fit, starts, budget_rows, ticker)
    ran = {}
    if finalists and not fit.swamped:
        finalists, ran = runoff(fit, finalists, int(RUNOFF_SHARE * budget_rows), ticker)
    while finalists and not fit.swamped:  # the winner gets the rest; what it leaves, the runner-up
        name, before = finalists[0][0], fit.best
        fit.optimise(finalists.pop(0)[1], budget_rows - spent(), ticker)
        if not report.start or fit.best is not before:
            report.start = name
    for row in report.starts:
        row.update({"fitted": fitted[row["start"]]} if row["start"] in fitted else {})
        row.update({"runoff": ran[row["start"]]} if row["start"] in ran else {})
    report.trials = fit.history
    report.fd_steps = fit.steps.tolist()
    best = fit.best
    if fit.swamped:
        report.warnings.append(f"the model's output noise (floor {fit.noise:.3g} per element) swamps the change of "
                               f"every parameter even at a difference step of {MAX_FD_STEP:g}; returning λ = 0 on "
                               "the input grid (the stock sampler)")
        best = None
    elif not math.isfinite(stock.loss) and best is None:
        report.warnings.append("the model's output is NaN/inf on this batch; returning λ = 0 on the input grid (the "
                               "stock sampler)")
    elif best is None:
        report.warnings.append("the final-sample fit found nothing closer to the teacher than the stock sampler; "
                               "returning λ = 0 on the input grid (the stock sampler)")
    if best is None:
        lambdas, grid_used, best = [0.0] * fit.n_lambdas, sigmas, stock
    else:
        lambdas, grid_used = fit.unpack(best.theta)
    report.rmse_after = fit.distance(best.final)
    report.steps = evaluation_rows(best.sigmas, lambdas, landing_sigmas(o.sampler, grid_used, o.flow))
    return torch.tensor(lambdas, dtype=torch.float64), grid_used, best.final, target
