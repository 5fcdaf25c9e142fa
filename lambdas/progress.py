"""A fit's progress as one count over its phases, and what it costs in generations: what both hosts show."""
from ..samplers import nfe
from .fit import FINAL_BUDGET, SCHEDULE_BUDGET
from .teacher import DEFAULT_SCALE, greedy_rows

FIT_UNITS = 100  # the final fit's phase: its row budget is only known once it starts


def fit_phases(objective, compare_stock=False):
    """The progress phases of a fit, in order (what lambdas.distill reports through its callback)."""
    if objective == "final":
        return ("teacher", "fit")
    return ("teacher", "stock", "student") if compare_stock else ("teacher", "student")


class FitProgress:
    """Counts a fit's callback reports ``{"phase", "i", "total"}`` into one ``(done, total)`` over its phases; a
    phase not reported yet counts ``student_steps`` (the final fit's FIT_UNITS), so the total is known from the first
    report and ``done`` never goes back."""

    def __init__(self, student_steps, phases):
        self.student_steps = student_steps
        self.phases = phases
        self.totals = {"fit": FIT_UNITS}
        self.done = 0

    def total(self):
        return sum(self.totals.get(p, self.student_steps) for p in self.phases)

    def update(self, info):
        """``(done, total)`` after the report ``info``."""
        phase = info.get("phase", "student")
        step, total = int(info.get("i", 0)) + 1, int(info.get("total", self.student_steps))
        if phase == "fit":
            step, total = min(FIT_UNITS, FIT_UNITS * step // max(total, 1)), FIT_UNITS
        self.totals[phase] = total
        offset = sum(self.totals.get(p, self.student_steps) for p in self.phases[:self.phases.index(phase)]) \
            if phase in self.phases else 0
        self.done = max(self.done, offset + step)
        return self.done, self.total()


def fit_generations(x, sigmas, sampler, teacher, objective, schedule=False, scale=None, flow=False):
    """At most how many generations (``sampler`` on ``sigmas`` for the batch x) a fit costs in network rows: the
    greedy fit's teacher and student runs, or the final fit's budget (teacher included)."""
    generation = nfe(sampler, sigmas) * x.shape[0]
    if objective == "final" or schedule:
        return (SCHEDULE_BUDGET if schedule else FINAL_BUDGET) * greedy_rows(x, sigmas, sampler, teacher, flow) \
            / generation
    return greedy_rows(x, sigmas, sampler, teacher, flow, DEFAULT_SCALE if scale is None else scale) / generation
