"""A1111 / Forge adapter (thin): sampler registration, λ lookup by checkpoint hash, auto-distill, settings.

``scripts/dode_webui.py`` imports this package as ``<private package name>.webui`` (see docs/webui.md). Host
modules (``modules.*``, ``gradio``) are imported inside the functions, so importing this package needs only torch.
"""
from .adapter import (INFOTEXT_FIT, INFOTEXT_KEY, LABEL_SUFFIX, MISS_POLICIES, OPTION_DEFAULTS, hide_sidecars,
                      label_for, labels, on_ui_settings, register, sampler_function)

__all__ = ["INFOTEXT_FIT", "INFOTEXT_KEY", "LABEL_SUFFIX", "MISS_POLICIES", "OPTION_DEFAULTS", "hide_sidecars", "label_for", "labels",
           "on_ui_settings", "register", "sampler_function"]
