"""λ, and optionally the σ schedule, fitted to what the user sees: the final sample.

The parameters θ are the λ of every corrected evaluation and, with a fitted schedule, the interior noise levels. The
objective is the distance between the student's final sample and the teacher's final sample over the fit batch,

    L(θ) = mean_b ‖x_N(θ; x_T^b) − x_teacher^b‖²,

which is what the greedy step-by-step fit only approximates (a step that "repairs" an intermediate error the stock
solver heals later costs the rest of the trajectory), plus a detail term (``detail_norms``; weight w = ``detail``,
by default 1 for a schedule fit and 0 for λ alone, measured: README):

    L(θ) = mean_b [ ‖x_N^b − x_teacher^b‖² + w (‖∇x_N^b‖ − ‖∇x_teacher^b‖)² ] / D,

∇ the forward differences along the spatial axes (the last two, or the one of a sequence; never the channels).
Why: a student that cannot match the teacher exactly minimises the first term by regressing towards the mean — it
keeps only the part of the detail it can place exactly (a regression coefficient ⟨d_s, d_t⟩/‖d_s‖² < 1), and the
user sees softer, lower-contrast samples at the same pixel distance (measured on the digits: the detail deficit
tracks FD at equal RMSE; benchmarks/detail.py). The second term asks every sample to carry as much detail as its
teacher's. It is 0 when the student matches the teacher and at most
8 w times the first term (|‖∇a‖ − ‖∇b‖| ≤ ‖∇(a − b)‖ ≤ 2√2 ‖a − b‖), so it only chooses among near-equal fits. A
batch of flat vectors (B, D) has no spatial axis and no detail term. L is minimised without autograd by
Levenberg–Marquardt on the residual r(θ) (per latent: x_N − x_teacher, then √w (‖∇x_N‖ − ‖∇x_teacher‖)):

    δ = −(JᵀJ + μ diag(JᵀJ))⁻¹ Jᵀ r,   accepted if L(θ + δ) < L(θ) on the whole fit batch (else μ grows),

with the Jacobian J = ∂r/∂θ by forward differences. Its cost is kept low three ways:
- a perturbation of a parameter that acts after evaluation k reruns only the evaluations after k (``ReplayModel``
  answers the unchanged head from the base trajectory);
- J is taken on a sub-batch of at most ``jacobian_batch`` latents, while every step is judged on the whole batch;
- after an accepted step, J gets Broyden's rank-one update J += (Δr − J δ) δᵀ / δᵀδ from the step's own run; it is
  recomputed only when a stale J stops giving accepted steps.

λ = 0 on the user's grid (the stock sampler) is in the search space and is evaluated first; the fit returns the θ of
lowest L among the states it reached that are strictly closer to the teacher's final sample than stock (the
distance alone, without the detail term), and the stock sampler with a warning if it reached none.

The schedule keeps the first σ and the final σ and moves the others, as softmax increments in t = σ^(1/ρ):

    t_k = t_0 − (t_0 − t_floor) Σ_{j≤k} w_j,   w = m + (1 − N m) softmax(log s⁰ + u),

with s⁰ chosen so that u = 0 is the user grid, m = MIN_SHARE the smallest share an increment can take, and t_floor
the final σ's t, or, for a grid ending in 0, the host's smallest usable σ (0 if none is given): the last increment is
then the slack between the last positive σ and that floor. Every θ is a strictly decreasing grid inside the host's
range, by construction; one the host's σ dtype cannot hold apart counts as a rejected trial. The schedule fit starts
from the user's grid or, when λ = 0 on it is closer to the teacher, from ``equidistributed_grid``: the grid on which
every step sees the same share of the teacher's output change Σ‖D_{k+1} − D_k‖ (``DenoisedPath`` records it).
"""
import math

import torch

from ..samplers import flow_option, get_solver, nfe
from .calls import ReplayModel, Trajectory

MAX_TRIALS = 200  # a hard stop; the row budget ends a fit long before
DEFAULT_JACOBIAN_BATCH = 32
FD_STEPS = (1e-2, 1e-3, 1e-4)  # forward-difference steps in λ and the schedule logits, tried in turn (see optimise)
SCHEDULE_RHO = 7.0
MIN_SLACK = 1e-2  # smallest starting share of the last increment when the grid sits on the host's σ floor
MIN_SHARE = 1e-3  # smallest share of the t-range any increment can take
INITIAL_DAMPING = 1.0
MIN_DAMPING, MAX_DAMPING = 1e-6, 1e3
DIAG_FLOOR = 1.0
MIN_IMPROVEMENT = 1e-4  # relative decrease of L below which an accepted step ends the fit


class ScheduleMap:
    """The interior σ's of a grid as N − 1 logits u; the first and final σ are kept. Each increment's share of the
    t-range is MIN_SHARE + (1 − N·MIN_SHARE)·softmax(log s⁰ + u)_k, so no step can collapse. u = 0 is the grid itself
    (``exact``) unless its last positive σ sits on the floor (the slack then starts at MIN_SLACK instead of 0) or an
    increment is thinner than 2·MIN_SHARE."""

    def __init__(self, sigmas, floor=0.0, rho=SCHEDULE_RHO):
        values = sigmas.detach().double().cpu()
        self.rho = rho
        self.ends_in_zero = bool(values[-1] == 0)
        self.t0 = float(values[0]) ** (1 / rho)
        self.t_floor = (float(floor) if self.ends_in_zero else float(values[-1])) ** (1 / rho)
        self.first, self.final = values[:1], values[-1:]
        self.size = len(values) - 2
        self.spare = 1 - (self.size + 1) * MIN_SHARE  # every increment keeps MIN_SHARE: the grid stays decreasing
        increments = self.increments(values)
        on_floor = self.ends_in_zero and bool(increments[-1] < MIN_SLACK)
        if on_floor:
            increments[-1] = MIN_SLACK
        shares = increments / increments.sum()
        self.exact = not on_floor and bool((shares > 2 * MIN_SHARE).all())
        self.log_s0 = ((shares.clamp(min=2 * MIN_SHARE) - MIN_SHARE) / self.spare).log()

    def increments(self, values):
        """The t-increments of a grid with this map's first and final σ, as fractions of the t-range (the last one,
        for a grid ending in 0, is the slack down to the floor)."""
        knots = (values[:-1] if self.ends_in_zero else values) ** (1 / self.rho)
        if self.ends_in_zero:
            knots = torch.cat([knots, knots.new_tensor([self.t_floor])])
        return ((knots[:-1] - knots[1:]) / (self.t0 - self.t_floor)).clamp(min=0)

    def logits(self, sigmas):
        """The u whose grid is ``sigmas`` (same first and final σ, inside the range; an increment thinner than
        MIN_SHARE is taken as MIN_SHARE)."""
        shares = self.increments(sigmas.detach().double().cpu())
        weights = ((shares / shares.sum() - MIN_SHARE) / self.spare).clamp(min=1e-12)
        u = weights.log() - self.log_s0
        return u[1:] - u[0]

    def sigmas(self, u):
        """The grid for logits ``u`` (length N − 1; the first increment's logit is fixed)."""
        shares = MIN_SHARE + self.spare * torch.softmax(self.log_s0 + torch.cat([u.new_zeros(1), u]), 0)
        cumulative = shares.cumsum(0)
        t = self.t0 - (self.t0 - self.t_floor) * cumulative[:self.size]
        return torch.cat([self.first, t ** self.rho, self.final]).double()


class DenoisedPath:
    """A teacher callback that keeps, per teacher step, the mean over the batch of ‖D_{k+1} − D_k‖ (the change of the
    model's output between consecutive teacher evaluations): O(batch × latent) memory, one scalar per step. The
    scalars stay on the model's device until ``changes()`` reads them, so the teacher's loop never waits on a copy."""

    def __init__(self):
        self.previous = None
        self.norms = []

    def __call__(self, info):
        denoised = info.get("denoised")
        if denoised is None:
            return
        denoised = denoised.double()
        if self.previous is not None:
            self.norms.append((denoised - self.previous).flatten(1).norm(dim=1).mean())
        self.previous = denoised

    def changes(self):
        """The recorded changes, one float per teacher step after the first."""
        return torch.stack(self.norms).tolist() if self.norms else []


def equidistributed_grid(teacher_sigmas, changes, steps, rho=SCHEDULE_RHO):
    """The ``steps``-interval grid from the teacher grid's first to its final σ on which every interval sees the same
    share of the teacher's total output change Σ_k ‖D_{k+1} − D_k‖ (interpolated linearly in σ^(1/ρ) inside a teacher
    interval; the k-th change is spread over teacher interval k, the last interval gets none).

    Why: a step of Euler/DDIM is exact while D stays constant over it, and its local error grows with how much D moves
    over the step; spreading that movement evenly puts small steps where the model's output changes fast and large
    ones where it barely moves (e.g. near σ = 0, where D(x, σ) ≈ x and a grid ending at σ_min wastes an evaluation).
    None when the teacher's output did not change (nothing to spread)."""
    weights = torch.tensor(list(changes) + [0.0] * (len(teacher_sigmas) - 1 - len(changes)), dtype=torch.float64)
    weights = weights[:len(teacher_sigmas) - 1].clamp(min=0)
    if not (torch.isfinite(weights).all() and weights.sum() > 0):
        return None
    cumulative = torch.cat([weights.new_zeros(1), weights.cumsum(0)]) / weights.sum()
    ends = teacher_sigmas.detach().double().cpu()
    t = ends ** (1 / rho)
    knots = []
    for k in range(1, steps):
        j = int(torch.searchsorted(cumulative, torch.tensor(k / steps, dtype=torch.float64)).clamp(1, len(t) - 1))
        width = cumulative[j] - cumulative[j - 1]
        fraction = (k / steps - cumulative[j - 1]) / width if width > 0 else 0.0
        knots.append(t[j - 1] + fraction * (t[j] - t[j - 1]))
    return torch.cat([ends[:1], torch.stack(knots) ** rho, ends[-1:]])


def detail_norms(x):
    """Per latent ‖∇x_b‖ (float64): the norm of x's forward differences along its spatial axes, all stacked. x is
    (B, C, *spatial) as the samplers see it; the spatial axes are the last two ((B, C, H, W) images, (B, C, T, H, W)
    video frames) or the one of a sequence (B, C, L); never the channel axis. None for (B, D), which has none."""
    if x.ndim < 3:
        return None
    x = x.double()
    axes = reversed(range(max(2, x.ndim - 2), x.ndim))  # width first, as the studies in the README ran it
    return torch.cat([x.diff(dim=axis).flatten(1) for axis in axes], 1).norm(dim=1)


def slice_rows(extra_args, rows, batch):
    """``extra_args`` for a sub-batch: top-level tensors whose first dimension is the batch are sliced to ``rows``."""
    return {k: v[rows] if torch.is_tensor(v) and v.ndim and v.shape[0] == batch else v for k, v in extra_args.items()}


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
        self.jacobian_batch = jacobian_batch
        self.rows = None
        self.jacobians = 0
        self.fd_index = 0
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
        model = ReplayModel(self.model, replay, rows, record)
        return self.solver.fn(model, x, sigmas, extra_args=extra, disable=True, lambdas=lambdas,
                              **flow_option(self.solver, self.flow))

    def residual(self, final, rows=None):
        """r per latent (on ``rows``, or all): x_N − x_teacher, then √w (‖∇x_N‖ − ‖∇x_teacher‖) if there is a
        detail term; flattened, latent after latent."""
        target = self.target if rows is None else self.target[rows]
        r = (final.double() - target.double()).flatten(1)
        if self.target_detail is not None:
            target_detail = self.target_detail if rows is None else self.target_detail[rows]
            r = torch.cat([r, self.detail_scale * (detail_norms(final) - target_detail)[:, None]], 1)
        return r.flatten()

    def distance(self, final):
        """The RMSE of a final sample to the teacher's over the whole batch (no detail term)."""
        return (final.double() - self.target.double()).square().mean().sqrt().item()

    def usable(self, theta):
        """False if θ's grid is not strictly decreasing once rounded to the host's σ dtype (e.g. float16)."""
        grid = self.unpack(theta)[1].double()
        return bool((grid[1:] < grid[:-1]).all())

    def evaluate(self, theta, replay=None, stock=False):
        """(θ, L, residual, trajectory, final sample) on the whole batch, L the mean square of the residual (the
        module's L up to a constant factor); L = inf for a non-finite result or a grid the host's σ dtype cannot hold
        (then nothing runs and the rest is None)."""
        if not stock and not self.usable(theta):
            return theta, math.inf, None, None, None
        trajectory = Trajectory()
        final = self.run(theta, replay=replay, record=trajectory, stock=stock)
        r = self.residual(final)
        loss = r.square().mean().item()
        return theta, (loss if math.isfinite(loss) else math.inf), r, trajectory, final

    def next_rows(self):
        """The rows the next Jacobian is taken on: all of them, or the next ``jacobian_batch`` in turn (each
        Jacobian sees other latents, so the steps do not fit one sub-batch)."""
        batch = self.x.shape[0]
        if batch <= self.jacobian_batch:
            return None
        start = (self.jacobians * self.jacobian_batch) % batch
        return (torch.arange(self.jacobian_batch) + start) % batch

    def jacobian(self, theta, trajectory, final):
        """∂r/∂θ on the Jacobian rows by forward differences, each run replaying the unchanged head of
        ``trajectory``. A column that is not finite (the model gave NaN/inf there) is 0: that direction is
        not used."""
        self.rows = self.next_rows()
        self.jacobians += 1
        if self.rows is not None:
            self.rows = self.rows.to(self.x.device)
        base = self.residual(final if self.rows is None else final[self.rows], self.rows)
        columns = []
        for k in range(self.size):
            step = theta.clone()
            step[k] += FD_STEPS[self.fd_index]
            if not self.usable(step):
                columns.append(torch.zeros_like(base))
                continue
            column = (self.residual(self.run(step, self.rows, trajectory), self.rows) - base) / FD_STEPS[self.fd_index]
            columns.append(column if torch.isfinite(column).all() else torch.zeros_like(column))
        return torch.stack(columns, 1)

    def project(self, theta):
        if self.clamp is not None:
            theta[:len(self.free)] = theta[:len(self.free)].clamp(-self.clamp, self.clamp)
        return theta

    def optimise(self, start, budget, progress=None, bound=math.inf):
        """Levenberg–Marquardt from ``start`` = (θ, L, r, trajectory, final) until it converges or has spent
        ``budget`` network rows; returns the (θ, L, r, trajectory, final) of lowest L among the states it reached
        whose distance to the teacher is below ``bound`` (the stock sampler's, so that the detail term never buys
        detail with a sample further from the teacher than stock), or None if it reached none.

        The damping follows Nielsen's rule (μ × max(1/3, 1 − (2ρ − 1)³) after a step whose actual/predicted
        decrease is ρ; × 2, 4, 8, … after rejected ones). After an accepted step J gets Broyden's update; a rejected
        step on an updated J takes a fresh J instead of more damping. A fresh J that gives no accepted step even at
        MAX_DAMPING was taken with a difference too coarse for this model (a sensitive sampler, e.g. DPM++ 2M under
        strong CFG: no descent at 1e-2, measured): the next, finer one of FD_STEPS is tried before the fit stops.
        ``progress(trial, final)`` follows each trial."""
        theta, loss, r, trajectory, final = start
        best = start if math.isfinite(loss) and self.distance(final) < bound else None
        spent = self.model.rows
        cost = {"jacobian": 0, "trial": 0}
        jac, fresh, damping, growth = None, False, INITIAL_DAMPING, 2
        for trial in range(MAX_TRIALS):
            if jac is None:
                if cost["jacobian"] and self.model.rows - spent + cost["jacobian"] > budget:
                    break
                before = self.model.rows
                jac, fresh = self.jacobian(theta, trajectory, final), True
                cost["jacobian"] = self.model.rows - before
            if cost["trial"] and self.model.rows - spent + cost["trial"] > budget:
                break
            r_rows = self.on_rows(r)
            delta = lm_step(jac, r_rows, damping)
            if not torch.isfinite(delta).all():
                break
            candidate = self.project(theta + delta)
            before = self.model.rows
            _, c_loss, c_r, c_traj, c_final = self.evaluate(candidate, trajectory)
            cost["trial"] = max(cost["trial"], self.model.rows - before)
            predicted = (r_rows.square().sum() - (r_rows + jac @ delta.to(jac)).square().sum()).item() / len(r_rows)
            gain = (loss - c_loss) / predicted if predicted > 0 else -1.0
            accepted = c_loss < loss
            c_distance = self.distance(c_final) if math.isfinite(c_loss) else math.inf
            self.history.append({"trial": trial, "loss": c_loss, "rmse": c_distance, "accepted": accepted,
                                 "damping": damping, "rows": self.model.rows - spent})
            if progress is not None:
                progress(trial, c_final if accepted else final)
            if accepted:
                improvement = (loss - c_loss) / loss
                jac = broyden(jac, self.on_rows(c_r) - r_rows, delta)
                theta, loss, r, trajectory, final = candidate, c_loss, c_r, c_traj, c_final
                if c_distance < bound:
                    best = candidate, c_loss, c_r, c_traj, c_final
                fresh, damping, growth = False, max(damping * max(1 / 3, 1 - (2 * gain - 1) ** 3), MIN_DAMPING), 2
                if improvement < MIN_IMPROVEMENT:
                    break
            elif not fresh:
                jac = None
            elif damping < MAX_DAMPING:
                damping, growth = damping * growth, growth * 2
            elif self.next_fd_step():
                jac, damping, growth = None, INITIAL_DAMPING, 2
            else:
                break
        return best

    def next_fd_step(self):
        """Moves to the next forward-difference step of FD_STEPS; False when none is left."""
        if self.fd_index + 1 >= len(FD_STEPS):
            return False
        self.fd_index += 1
        return True

    def on_rows(self, r):
        """The part of a whole-batch residual on the Jacobian rows."""
        return r if self.rows is None else r.view(self.x.shape[0], -1)[self.rows].flatten()


def lm_step(jac, r, damping):
    """δ = −(JᵀJ + μ diag(JᵀJ))⁻¹ Jᵀ r in float64 (a tiny ridge keeps unidentifiable directions at 0)."""
    normal = jac.T @ jac
    diag = normal.diagonal().clamp(min=DIAG_FLOOR * float(normal.diagonal().mean().clamp(min=1e-30)))
    system = normal + torch.diag(damping * diag + 1e-12 * float(diag.max()))
    return torch.linalg.solve(system, -(jac.T @ r)).cpu()


def broyden(jac, change, delta):
    """Broyden's rank-one update of J after a step δ that changed r by ``change``: J + (Δr − J δ) δᵀ / δᵀδ."""
    delta = delta.to(jac)
    return jac + torch.outer(change - jac @ delta, delta) / delta.dot(delta)
