"""The settings section "D-ODE": options, their defaults, and what they ask of a run."""
from ..lambdas import DEFAULT_OBJECTIVE, DEFAULT_SCALE, DEFAULT_TEACHER, OBJECTIVES
from ..samplers import SAMPLER_NAMES, SOLVERS
from .names import core_sampler
from .report import log_once

TEACHERS = {SOLVERS[name].label or name: name for name in SAMPLER_NAMES}  # the WebUI's labels: "DPM++ 2M", …

SECTION = ("dode", "D-ODE")
MISS_POLICIES = ("stock sampler, log once", "stock sampler, silent", "error")
OPTION_DEFAULTS = {
    "dode_auto_distill": False,
    "dode_distill_tails": False,
    "dode_teacher": SOLVERS[DEFAULT_TEACHER].label,
    "dode_scale": DEFAULT_SCALE,
    "dode_objective": DEFAULT_OBJECTIVE,
    "dode_fit_schedule": True,
    "dode_miss_policy": MISS_POLICIES[0],
}


def opt(key):
    """The setting ``key`` (its default when unset)."""
    from modules import shared
    value = getattr(shared.opts, key, OPTION_DEFAULTS[key])
    return OPTION_DEFAULTS[key] if value is None else value


def on_ui_settings():
    """Settings section "D-ODE" (registered through script_callbacks.on_ui_settings)."""
    from modules import shared
    try:
        import gradio as gr
        radio, slider = gr.Radio, gr.Slider
    except ImportError:  # headless stubs: the WebUI picks a component from the default's type
        radio = slider = None

    def add(key, label, component=None, args=None):
        shared.opts.add_option(key, shared.OptionInfo(OPTION_DEFAULTS[key], label, component, args, section=SECTION))

    add("dode_auto_distill", "Auto-distill λ on first use of a (checkpoint, sampler, σ grid, CFG) combination "
        "(the first generation also runs the teacher)")
    add("dode_distill_tails", "Also auto-distill for img2img and Hires fix passes (λ fitted for exactly that tail)")
    add("dode_teacher", "Teacher solver for auto-distill", radio, {"choices": list(TEACHERS)})
    add("dode_scale", "Teacher sub-steps per student step (scale)", slider, {"minimum": 1, "maximum": 50, "step": 1})
    add("dode_objective", "Auto-distill objective (final: λ fitted to the teacher's final sample; greedy: step by "
        "step, the paper's fit)", radio, {"choices": list(OBJECTIVES)})
    add("dode_fit_schedule", "Auto-distill also fits the σ schedule when the schedule type is \"D-ODE fitted\" "
        "(needs the final objective, which it then uses)")
    add("dode_miss_policy", "When no λ matches", radio, {"choices": list(MISS_POLICIES)})


def fit_settings(schedule):
    """(teacher, scale, objective) for auto-distill from the settings; a schedule fit needs the final objective."""
    chosen = opt("dode_teacher")
    teacher = TEACHERS.get(chosen) or (chosen if chosen in SAMPLER_NAMES else core_sampler(chosen))  # or an old id
    if teacher is None:
        log_once(("teacher", chosen), "D-ODE: unknown teacher %r in the settings; using %s", chosen,
                 SOLVERS[DEFAULT_TEACHER].label)
        teacher = DEFAULT_TEACHER
    objective = "final" if schedule else opt("dode_objective")
    if objective not in OBJECTIVES:
        log_once(("objective", objective), "D-ODE: unknown objective %r in the settings; using %s", objective,
                 DEFAULT_OBJECTIVE)
        objective = DEFAULT_OBJECTIVE
    return teacher, max(1, int(opt("dode_scale"))), objective


def error_on_miss(tail):
    """True if the settings ask for an error on a miss (full schedules only)."""
    return opt("dode_miss_policy") == "error" and not tail


def miss_policy(tail):
    """The core miss policy the settings ask for: auto-distill (a tail only with the tails option), error, stock."""
    if opt("dode_auto_distill") and (not tail or opt("dode_distill_tails")):
        return "auto_distill"
    return "error" if error_on_miss(tail) else "stock"


def how_to_fit(tail=False, schedule=False):
    """What to turn on in Settings → D-ODE so that the next generation with these settings fits, in the UI's words."""
    if not opt("dode_auto_distill"):
        return 'turn on Settings → D-ODE → "Auto-distill λ" and generate again to fit one'
    if tail and not opt("dode_distill_tails"):
        return 'turn on Settings → D-ODE → "Also auto-distill for img2img and Hires fix passes" to fit one'
    if schedule and not opt("dode_fit_schedule"):
        return 'turn on Settings → D-ODE → "Auto-distill also fits the σ schedule" to fit one'
    return "auto-distill fits one with a D-ODE sampler"
