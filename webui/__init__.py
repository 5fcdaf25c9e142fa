"""A1111 / Forge adapter (thin): sampler and schedule-type registration, λ lookup by checkpoint hash, auto-distill,
settings.

``scripts/dode_webui.py`` imports this package as ``<private package name>.webui`` (see docs/webui.md). Host
modules (``modules.*``, ``gradio``) are imported inside the functions, so importing this package needs only torch.
"""
from .adapter import (INFOTEXT_FIT, INFOTEXT_KEY, INFOTEXT_SCHEDULE, LABEL_SUFFIX, MISS_POLICIES, OPTION_DEFAULTS,
                      SCHEDULER_LABEL, fitted_schedule, hide_sidecars, label_for, labels, on_ui_settings, register,
                      register_scheduler, remember, sampler_function)

__all__ = ["INFOTEXT_FIT", "INFOTEXT_KEY", "INFOTEXT_SCHEDULE", "LABEL_SUFFIX", "MISS_POLICIES", "OPTION_DEFAULTS",
           "SCHEDULER_LABEL", "fitted_schedule", "hide_sidecars", "label_for", "labels", "on_ui_settings", "register",
           "register_scheduler", "remember", "sampler_function"]
