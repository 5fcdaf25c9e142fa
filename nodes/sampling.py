"""The ``<name>_dode`` sampler functions ComfyUI calls: λ from the core's lookup (lookup.py), else the miss policy."""
import logging
import os

from .. import samplers as core
from ..lambdas.resolve import miss_action
from ..samplers import flow_option
from . import feedback, lookup
from .context import Run
from .distill import auto_distill
from .options import dode_name

log = logging.getLogger("dode")

# ComfyUI's stock sampler for each D-ODE solver (name in comfy.k_diffusion.sampling, options): what λ = 0 reproduces
HOST_STOCK = {"euler": ("sample_euler", {}), "heun": ("sample_heun", {}), "dpmpp_2m": ("sample_dpmpp_2m", {}),
              "dpmpp_2s": ("sample_dpmpp_2s_ancestral", {"eta": 0.0}),
              "dpmpp_3m": ("sample_dpmpp_3m_sde", {"eta": 0.0}),
              "ipndm": ("sample_ipndm", {}), "deis": ("sample_deis", {})}


def origin(entry, where):
    """How a λ entry is named to the user: its file name (or set), and whether its σ grid is a fitted schedule."""
    text = os.path.basename(where) if isinstance(where, str) and where.endswith(".safetensors") else where
    kind = "fitted schedule" if getattr(entry, "schedule", "given") == "fitted" else "given grid"
    return f"{text} ({kind})"


def make_sampler_function(name):
    """The ``sample_<name>_dode`` function for ``comfy.k_diffusion.sampling`` (and for KSAMPLER objects)."""
    core.get_solver(name)

    def sampler_function(model, x, sigmas, extra_args=None, callback=None, disable=None, dode_lambdas=None,
                         dode_strict=True, **ignored):
        if ignored:
            log.debug("[dode] %s ignores sampler options %s", dode_name(name), sorted(ignored))
        run = Run(model, extra_args)
        entry, where = lookup.find_entry(name, sigmas, run, explicit=dode_lambdas, strict=dode_strict)
        if entry is not None:
            feedback.tell(f"{dode_name(name)}: λ from {origin(entry, where)}; {entry.describe()}")
            return core.sample(model, x, sigmas, sampler=name, lambdas=entry.lambdas, extra_args=extra_args,
                               callback=callback, disable=disable, **flow_option(core.get_solver(name), run.flow))
        return on_missing(name, model, x, sigmas, extra_args, callback, disable, run, where)

    sampler_function.__name__ = f"sample_{dode_name(name)}"
    sampler_function.__qualname__ = sampler_function.__name__
    sampler_function.__doc__ = f"D-ODE {name}: λ from the λ store (models/dode_lambdas), else the miss policy."
    sampler_function.dode_solver = name
    return sampler_function


def stock_sample(name, model, x, sigmas, extra_args, callback, disable, run):
    """The stock sampler for ``name``: ComfyUI's own (HOST_STOCK), so that λ = 0 gives the host's bits; the core's
    λ = 0 update where this ComfyUI lacks that sampler."""
    try:
        import comfy.k_diffusion.sampling as kds
        function_name, options = HOST_STOCK[name]
        host = getattr(kds, function_name)
    except (ImportError, AttributeError):
        return core.sample(model, x, sigmas, sampler=name, lambdas=None, extra_args=extra_args, callback=callback,
                           disable=disable, **flow_option(core.get_solver(name), run.flow))
    return host(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)


def on_missing(name, model, x, sigmas, extra_args, callback, disable, run, reason):
    """The miss policy (resolve.miss_action): an error, a fit on this batch, or the host's stock sampler."""
    blocker = None if run.identity is not None and len(sigmas) >= 3 and not run.guider_problem else \
        "auto_distill needs an identifiable model, a single CFG scale and at least 2 steps"
    action = miss_action(run.options.on_missing, blocker)
    if action == "error":
        raise RuntimeError(f"D-ODE {dode_name(name)}: {reason}. Run 'Distill λ' with this model, sampler, scheduler, "
                           "steps, denoise and cfg, or set on_missing to stock/auto_distill in 'D-ODE Model Options'")
    if action == "distill":
        return auto_distill(name, model, x, sigmas, extra_args, disable, run, reason)
    if run.options.on_missing == "auto_distill":
        reason = f"{reason}; {blocker}"
    feedback.tell(f"{dode_name(name)}: stock {name} (λ = 0): {reason}. To use D-ODE, run "
                  "'Distill λ' (sampling/dode) once with the same model, sampler, scheduler, steps, denoise and cfg, "
                  "or attach 'D-ODE Model Options' with on_missing=auto_distill.", "warning",
                  toast=miss_toast(name, sigmas, run))
    return stock_sample(name, model, x, sigmas, extra_args, callback, disable, run)


def miss_toast(name, sigmas, run):
    """The one short line a miss shows in the browser (the log line has the nearest entry and what differs)."""
    if run.guider_problem:
        why = "this guider has two CFG scales"
    elif run.identity is None:
        why = "the model could not be identified"
    else:
        cfg = "" if run.cfg is None else f", cfg {run.cfg:g}"
        why = f"no λ for {run.identity.name}, {len(sigmas) - 1} steps{cfg}; run Distill λ with these settings"
    return f"{dode_name(name)} ran as plain {name}: {why} (details in the log)."


def register_samplers():
    """Adds ``<name>_dode`` for every D-ODE solver to ComfyUI's sampler lists, in place and idempotently.

    Sets ``comfy.k_diffusion.sampling.sample_<name>_dode`` and appends the name to ``KSAMPLER_NAMES`` and
    ``SAMPLER_NAMES`` (the list object behind ``KSampler.SAMPLERS`` and KSamplerSelect). Modules are never
    reloaded. Returns the names now registered."""
    import comfy.k_diffusion.sampling as kds
    import comfy.samplers as cs
    lists = []
    for lst in (getattr(cs, "KSAMPLER_NAMES", None), getattr(cs, "SAMPLER_NAMES", None),
                getattr(getattr(cs, "KSampler", None), "SAMPLERS", None)):
        if isinstance(lst, list) and not any(lst is seen for seen in lists):
            lists.append(lst)
    registered = []
    for name in core.SAMPLER_NAMES:
        label = dode_name(name)
        attr = f"sample_{label}"
        existing = getattr(kds, attr, None)
        if existing is not None and getattr(existing, "dode_solver", None) is None:
            log.warning("[dode] %s already exists (from another pack?); not replacing it", attr)
            continue
        if existing is None:
            setattr(kds, attr, make_sampler_function(name))
        for lst in lists:
            if label not in lst:
                lst.append(label)
        registered.append(label)
    return registered
