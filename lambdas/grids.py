"""σ grids of a schedule fit: the map from logits to grids, and the starting grids it screens.

A schedule keeps the first and final σ and moves the interior ones as softmax increments in t = σ^(1/ρ):
t_k = t_0 − (t_0 − t_floor) Σ_{j≤k} w_j, w = m + (1 − N m) softmax(log s⁰ + u) (docs/architecture.md).
The starts spread the teacher's output change Σ‖D_{k+1} − D_k‖ over the steps: evenly, or with the first step
taking a larger share of it.
"""
import torch

SCHEDULE_RHO = 7.0
MIN_SLACK = 1e-2  # smallest starting share of the last increment when the grid sits on the host's σ floor
MIN_SHARE = 1e-3  # smallest share of the t-range any increment can take
FIRST_SHARES = (0.5, 0.75)  # the first step's share of the teacher's output change in the screened starts


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
        """The recorded changes, one float per teacher step after the first; frees the last output kept."""
        self.previous = None
        return torch.stack(self.norms).tolist() if self.norms else []


def change_levels(teacher_sigmas, changes):
    """The cumulative share of the teacher's output change at each teacher σ (0 at the first, 1 at the last; the
    k-th change is spread over teacher interval k, the last interval gets none); None if nothing changed."""
    weights = torch.tensor(list(changes) + [0.0] * (len(teacher_sigmas) - 1 - len(changes)), dtype=torch.float64)
    weights = weights[:len(teacher_sigmas) - 1].clamp(min=0)
    if not (torch.isfinite(weights).all() and weights.sum() > 0):
        return None
    return torch.cat([weights.new_zeros(1), weights.cumsum(0)]) / weights.sum()


def grid_at_levels(teacher_sigmas, cumulative, levels, rho=SCHEDULE_RHO):
    """The grid from the teacher's first to its final σ whose interior σ's sit where the cumulative change reaches
    each of ``levels`` (linear in σ^(1/ρ) inside a teacher interval)."""
    ends = teacher_sigmas.detach().double().cpu()
    t = ends ** (1 / rho)
    knots = []
    for level in levels:
        j = int(torch.searchsorted(cumulative, torch.tensor(level, dtype=torch.float64)).clamp(1, len(t) - 1))
        width = cumulative[j] - cumulative[j - 1]
        fraction = (level - cumulative[j - 1]) / width if width > 0 else 0.0
        knots.append(t[j - 1] + fraction * (t[j] - t[j - 1]))
    return torch.cat([ends[:1], torch.stack(knots) ** rho, ends[-1:]])


def first_share_levels(steps, first):
    """Cumulative change levels of a ``steps``-interval grid whose first step takes share ``first`` of the change and
    the others equal shares of the rest."""
    return [first + (1 - first) * j / (steps - 1) for j in range(steps - 1)]


def equidistributed_grid(teacher_sigmas, changes, steps, rho=SCHEDULE_RHO):
    """The ``steps``-interval grid on which every interval sees the same share of the teacher's output change
    Σ_k ‖D_{k+1} − D_k‖ (an Euler step is exact while D is constant); None when the output did not change."""
    cumulative = change_levels(teacher_sigmas, changes)
    if cumulative is None:
        return None
    return grid_at_levels(teacher_sigmas, cumulative, [k / steps for k in range(1, steps)], rho)


def start_grids(sigmas, teacher_sigmas, changes):
    """The schedule fit's screened starts, by name: the user's grid, the equidistributed grid, and grids whose first
    step takes each of FIRST_SHARES of the teacher's output change (the rest spread evenly)."""
    starts = {"user grid": sigmas.detach().double().cpu()}
    cumulative = change_levels(teacher_sigmas, changes)
    if cumulative is None:
        return starts
    steps = len(sigmas) - 1
    starts["equidistributed"] = grid_at_levels(teacher_sigmas, cumulative, first_share_levels(steps, 1 / steps))
    for first in FIRST_SHARES:
        if first > 1 / steps:
            starts[f"first step {first:g} of the change"] = grid_at_levels(
                teacher_sigmas, cumulative, first_share_levels(steps, first))
    return starts
