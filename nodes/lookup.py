"""ComfyUI's sources of fits (explicit set, the MODEL's attached set, the λ store) for the core's one lookup."""
from .. import samplers as core
from ..lambdas.match import ANY, Request, place
from ..lambdas.resolve import entry_source, lookup_order, resolve, store_source, unserved
from . import feedback, store
from .context import model_identity
from .options import MODEL_OPTIONS_KEY, SUFFIX, DodeOptions, dode_name


def attached_source(options):
    """The λ set a "D-ODE Model Options" / Distill λ MODEL carries, or None."""
    lambdas = options.lambdas
    return None if lambdas is None or not lambdas.entries else entry_source(lambdas.source, lambdas.entries)


def find_entry(name, sigmas, run, explicit=None, strict=True):
    """``(entry, where)`` for this call, else ``(None, reason)``; an explicit set that does not fit raises."""
    sigmas = sigmas.detach().cpu()
    if explicit is not None:
        return find_explicit(name, sigmas, run, explicit, strict)
    identity = run.identity
    request = (Request.grid(name, sigmas, None, run.cfg) if identity is None else
               Request.grid(name, sigmas, identity.ids, run.cfg, identity.sampling, identity.weights))
    if run.guider_problem:
        return None, unserved(request, run.guider_problem)
    if run.identity is None:
        return None, unserved(request, run.identity_error)
    st = store.store()
    found = resolve(request, lookup_order(attached=attached_source(run.options), stores=[store_source(st)]))
    for text in found.told:
        feedback.tell(f"{dode_name(name)}: the λ set attached to the model does not fit this run ({text}); "
                      "trying the λ store", "warning")
    store.report_skipped(st)
    return (found.entry, found.where) if found.entry is not None else (None, found.reason)


def find_explicit(name, sigmas, run, explicit, strict):
    """An explicit set: strict, this model and cfg; else any model and cfg (this run's cfg first)."""
    if run.guider_problem:
        raise RuntimeError(f"D-ODE: cannot use {explicit.source}: {run.guider_problem}")
    if strict and run.identity is None:
        raise RuntimeError(f"D-ODE: cannot check that {explicit.source} belongs to this model: "
                           f"{run.identity_error}; turn 'strict' off to use it anyway")
    source = entry_source(explicit.source, explicit.entries)
    request = Request.grid(name, sigmas, run.identity.ids if strict else None, run.cfg,
                           run.identity.sampling if strict else None, run.identity.weights if strict else None)
    if not strict:
        found = resolve(request, [source])
        if found.entry is not None:
            return found.entry, explicit.source
        request = Request.grid(name, sigmas, None, ANY)
    return resolve(request, lookup_order(explicit=source)).entry, explicit.source


def find_fitted(patcher, sampler, cfg, steps, sigma_max, sigma_last):
    """``(entry, where, model name)`` of the fitted schedule for this request, else ``(None, why, model name)``."""
    options = patcher.model_options.get(MODEL_OPTIONS_KEY)
    options = options if isinstance(options, DodeOptions) else DodeOptions()
    identity = model_identity(patcher, options.identity)
    request = Request.fitted(solver_of(sampler) or ANY, steps, sigma_max, sigma_last, identity.ids,
                             ANY if cfg is None else cfg, identity.sampling, identity.weights)
    st = store.store()
    found = resolve(request, lookup_order(attached=attached_source(options), stores=[store_source(st)]))
    store.report_skipped(st)
    return found.entry, found.reason if found.entry is None else place(found.where), identity.name


def solver_of(sampler):
    """The D-ODE solver a sampler name stands for (``euler`` for ``euler`` and ``euler_dode``), else None."""
    if sampler and sampler.endswith(SUFFIX):
        sampler = sampler[:-len(SUFFIX)]
    return sampler if sampler in core.SAMPLER_NAMES else None
