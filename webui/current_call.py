"""Host workaround, the current-call global: the WebUI calls a schedule function with the step count and σ range
only, so the script records each generation just before it samples, for "D-ODE fitted" to read back."""
from .names import INFOTEXT_FIT, INFOTEXT_KEY, INFOTEXT_SCHEDULE
from .report import prefix

_current_call = {"p": None}  # the generation about to sample


def remember(p):
    """Records the generation about to sample and drops this pass's D-ODE infotext left by an earlier one."""
    _current_call["p"] = p
    info = getattr(p, "extra_generation_params", None)
    if info is not None:  # X/Y/Z cells are shallow copies of one p: they share extra_generation_params
        for key in (INFOTEXT_KEY, INFOTEXT_FIT, INFOTEXT_SCHEDULE):
            info.pop(prefix(p) + key, None)


def current_generation(inner_model):
    """The recorded generation if its sampler's k-diffusion wrapper is ``inner_model`` (this call's), else None."""
    p = _current_call["p"]
    if p is None or inner_model is None or getattr(getattr(p, "sampler", None), "model_wrap", None) is not inner_model:
        return None
    return p
