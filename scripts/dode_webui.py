"""A1111 / Forge / reForge entry point: registers the D-ODE samplers, the schedule type "D-ODE fitted" and the
"D-ODE" settings section.

The WebUI imports ``scripts/*.py`` as standalone modules, not as part of a package, and the extension folder may
have any name (``sd-webui-dode``, ``dode-main``, ...), so ``import dode`` is not available. This file therefore makes
the extension root an importable package under the private name ``_dode_webui_ext`` (a bare package module whose
``__path__`` is the root, like a namespace package) and imports ``_dode_webui_ext.webui`` from it. The root
``__init__.py`` (the ComfyUI entry and library API) is not executed, so ComfyUI-side code never runs in a WebUI, and
a ``dode`` installed with pip cannot shadow or be shadowed by the extension's copy. The core (``samplers/``,
``lambdas/``) is shared unchanged through relative imports.

Registration happens at import, before the WebUI builds its UI and API, and is guarded, so "Reload UI" (which
re-imports this file but not ``modules.sd_samplers``) adds nothing twice. The always-on script ``DodeSchedule`` (an
accordion listing the λ files' entries, no generation inputs) hands each generation to the adapter just before it samples: a schedule function gets only the step count
and σ range, and "D-ODE fitted" also needs the generation's sampler, checkpoint and CFG scale.
"""
import importlib
import importlib.machinery
import os
import sys
import types

PACKAGE = "_dode_webui_ext"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_package(name=PACKAGE, root=ROOT):
    """The extension root as package ``name`` (reused if already loaded from the same folder)."""
    pkg = sys.modules.get(name)
    if pkg is not None and [os.path.abspath(p) for p in getattr(pkg, "__path__", [])] == [root]:
        return pkg
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [root]
    pkg = types.ModuleType(name, "D-ODE extension root (core + WebUI adapter), loaded by scripts/dode_webui.py")
    pkg.__spec__, pkg.__path__, pkg.__package__ = spec, [root], name
    for sub in [m for m in sys.modules if m.startswith(name + ".")]:  # another copy was loaded: drop it
        del sys.modules[sub]
    sys.modules[name] = pkg
    return pkg


load_package()
adapter = importlib.import_module(PACKAGE + ".webui")
registered = adapter.register()
scheduler_added = adapter.register_scheduler()
adapter.hide_sidecars()

try:
    from modules import script_callbacks, scripts
except ImportError:  # not inside a WebUI
    script_callbacks = scripts = None
if script_callbacks is not None:
    script_callbacks.on_ui_settings(adapter.on_ui_settings)
    script_callbacks.on_app_started(adapter.add_routes)

if scripts is not None:
    class DodeSchedule(scripts.Script):
        """Always on: records each generation for the schedule type "D-ODE fitted"; its accordion lists the λ
        files' entries (no generation inputs)."""

        def title(self):
            return "D-ODE"

        def show(self, is_img2img):
            return scripts.AlwaysVisible

        def ui(self, is_img2img):
            adapter.build_ui()
            return []

        def process_before_every_sampling(self, p, *args, **kwargs):
            adapter.remember(p)
