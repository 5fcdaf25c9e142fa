"""The ``dode`` scheduler: the σ grid a fit chose for this model, sampler, steps and cfg (Distill λ with
``fit_schedule``), else ComfyUI's stock ``simple`` scheduler, bit for bit.

ComfyUI calls a scheduler with ``(model_sampling, steps)`` only. Which model, sampler and cfg it is serving is read
from its caller, the one place that knows: ``comfy.samplers.KSampler`` (used by KSampler and KSamplerAdvanced) holds
the ModelPatcher and the sampler name, and ``comfy.sample.sample`` above it the cfg; a node that passes the
ModelPatcher whose ``model_sampling`` this is (BasicScheduler) gives the model only. The fitted entry is then looked
for as the samplers look for λ: the λ set attached to the model (Distill λ's MODEL output), fits this process could
not save, then the λ store; it must have this model identity, this many steps, the model's σ range (first σ = the
stock grid's first σ, last σ 0) and, where known, this sampler (``<name>`` or ``<name>_dode``) and cfg. Where the
sampler or cfg is unknown (BasicScheduler) the first fitted entry for the rest is used, and named.

A ``*_dode`` sampler then finds λ for the fitted grid itself (a fitted entry serves its stored grid); a plain sampler
samples the fitted grid without λ. On a miss the grid is the ``simple`` one and the user is told once per setting.
KSampler's own adjustments still apply afterwards: with denoise < 1 it asks for ``int(steps/denoise)`` steps and keeps
the last ``steps + 1`` σ's, and for DPM-2 / UniPC it asks for one step more and drops the penultimate σ; those
requests find a fitted entry only for that many steps.
"""
import logging
import sys

from . import feedback
from .lookup import find_fitted

NAME = "dode"
FALLBACK = "simple"  # ComfyUI's default scheduler (the first in its list): defined for every model_sampling
CALLER_DEPTH = 16
log = logging.getLogger("dode")


def dode_scheduler(model_sampling, steps):
    """ComfyUI scheduler ``(model_sampling, steps) -> σ grid``: the fitted schedule for the caller's model, sampler
    and cfg, else ``simple``'s grid."""
    import comfy.samplers
    fallback = comfy.samplers.calculate_sigmas(model_sampling, FALLBACK, steps)
    patcher, sampler, cfg = stack_walk(model_sampling)
    if patcher is None:
        feedback.tell_once(("dode-scheduler", "no-model"), f"dode scheduler: called without a model it can see "
                           f"(not from KSampler or BasicScheduler); using the stock '{FALLBACK}' scheduler", "warning")
        return fallback
    try:
        entry, where, model_name = find_fitted(patcher, sampler, cfg, steps, float(fallback[0]), float(fallback[-1]))
    except Exception as e:  # a scheduler must give a grid: the stock one, and why
        feedback.tell(f"dode scheduler: lookup failed ({type(e).__name__}: {e}); using the stock '{FALLBACK}' "
                      "scheduler", "warning")
        return fallback
    want = f"{model_name}, {sampler or 'any sampler'}, {steps} steps, {'any cfg' if cfg is None else f'cfg {cfg:g}'}"
    if entry is None:
        feedback.tell_once(("dode-scheduler", want, where), f"dode scheduler: no fitted schedule for {want} ({where}); "
                           f"using the stock '{FALLBACK}' scheduler", "info")
        return fallback
    feedback.tell(f"dode scheduler: fitted σ grid from {where} ({entry.sampler}, {entry.steps} steps, "
                  f"cfg {entry.cfg if entry.cfg is None else f'{entry.cfg:g}'}): "
                  + ", ".join(f"{s:.4g}" for s in entry.sigmas.tolist()))
    return entry.sigmas.float()


dode_scheduler.dode_scheduler = True


def stack_walk(model_sampling):
    """Host workaround (stack walk): ``(ModelPatcher, sampler, cfg)`` of the caller's frames, each None if unknown."""
    import comfy.samplers
    patcher = sampler = cfg = None
    frame = sys._getframe(1)
    for _ in range(CALLER_DEPTH):
        frame = frame.f_back
        if frame is None:
            break
        local = frame.f_locals
        owner = local.get("self")
        if patcher is None and isinstance(owner, comfy.samplers.KSampler) and serves(owner.model, model_sampling):
            patcher, sampler = owner.model, owner.sampler
        elif patcher is None and serves(local.get("model"), model_sampling):
            patcher = local["model"]
        value = local.get("cfg")
        if patcher is not None and local.get("model") is patcher and isinstance(value, (int, float)) and \
                not isinstance(value, bool):
            cfg = float(value)
            break
    return patcher, sampler, cfg


def serves(model, model_sampling):
    """True if ``model`` is a ModelPatcher whose model_sampling is ``model_sampling``."""
    try:
        return model.get_model_object("model_sampling") is model_sampling
    except Exception:
        return False


def register_scheduler():
    """Adds ``dode`` to ComfyUI's schedulers in place and idempotently: ``SCHEDULER_HANDLERS`` (what
    calculate_sigmas dispatches on) and the ``SCHEDULER_NAMES`` list object behind ``KSampler.SCHEDULERS``,
    BasicScheduler's and the V3 nodes' scheduler inputs. Returns the name, or None where this ComfyUI has no handler
    table (it then keeps its stock list)."""
    import comfy.samplers as cs
    handlers = getattr(cs, "SCHEDULER_HANDLERS", None)
    handler_type = getattr(cs, "SchedulerHandler", None)
    if not isinstance(handlers, dict) or handler_type is None:
        log.warning("[dode] this ComfyUI has no SCHEDULER_HANDLERS table; the 'dode' scheduler is not "
                             "available (the *_dode samplers are)")
        return None
    existing = handlers.get(NAME)
    if existing is not None and not getattr(getattr(existing, "handler", None), "dode_scheduler", False):
        log.warning("[dode] a scheduler called %r already exists (from another pack?); not replacing it",
                             NAME)
        return None
    if existing is None:
        handlers[NAME] = handler_type(dode_scheduler, use_ms=True)
    lists = []
    for lst in (getattr(cs, "SCHEDULER_NAMES", None), getattr(getattr(cs, "KSampler", None), "SCHEDULERS", None)):
        if isinstance(lst, list) and not any(lst is seen for seen in lists):
            lists.append(lst)
    for lst in lists:
        if NAME not in lst:
            lst.append(NAME)
    return NAME
