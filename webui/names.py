"""The WebUI's names for D-ODE: sampler labels, the schedule type, infotext keys."""
from ..samplers import SAMPLER_NAMES, SOLVERS

LABEL_SUFFIX = " (D-ODE)"  # ends in ")", so the WebUI never splits a scheduler name off the label
INFOTEXT_KEY = "D-ODE λ"
INFOTEXT_FIT = "D-ODE fit"
INFOTEXT_SCHEDULE = "D-ODE schedule"
HIRES_PREFIX = "Hires "
SCHEDULER_NAME = "dode_fitted"
SCHEDULER_LABEL = "D-ODE fitted"
FALLBACK_SCHEDULER = "karras"  # the stock schedule type "D-ODE fitted" gives without a fit, and a fit's start


def label_for(name):
    """The WebUI label of the core sampler ``name``, e.g. ``euler`` → ``Euler (D-ODE)``."""
    solver = SOLVERS.get(name)
    base = solver.label if solver is not None and solver.label else name.replace("_", " ").title()
    return base + LABEL_SUFFIX


def labels():
    """{WebUI label: core sampler name} of every D-ODE sampler."""
    return {label_for(name): name for name in SAMPLER_NAMES}


def core_sampler(label):
    """The core sampler behind a WebUI label: a D-ODE one (``Euler (D-ODE)``) or its stock twin (``Euler``)."""
    if label is None:
        return None
    stock = {solver.label.lower(): name for name, solver in SOLVERS.items() if solver.label}
    return labels().get(label) or stock.get(label.lower())
