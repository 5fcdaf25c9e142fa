"""A1111 / Forge adapter (thin): sampler and schedule-type registration, λ lookup by checkpoint hash, auto-distill,
settings.

``scripts/dode_webui.py`` imports this package as ``<private package name>.webui`` (see docs/webui.md). Host
modules (``modules.*``, ``gradio``) are imported inside the functions, so importing this package needs only torch.
"""
from .checkpoint_list import hide_sidecars
from .current_call import remember
from .lambda_files import add_routes, build_ui
from .names import INFOTEXT_FIT, INFOTEXT_KEY, INFOTEXT_SCHEDULE, LABEL_SUFFIX, SCHEDULER_LABEL, label_for, labels
from .registration import register, register_scheduler
from .run import sampler_function
from .schedule import fitted_schedule
from .settings import MISS_POLICIES, OPTION_DEFAULTS, on_ui_settings

__all__ = ["add_routes", "build_ui", "INFOTEXT_FIT", "INFOTEXT_KEY", "INFOTEXT_SCHEDULE", "LABEL_SUFFIX", "MISS_POLICIES", "OPTION_DEFAULTS",
           "SCHEDULER_LABEL", "fitted_schedule", "hide_sidecars", "label_for", "labels", "on_ui_settings", "register",
           "register_scheduler", "remember", "sampler_function"]
