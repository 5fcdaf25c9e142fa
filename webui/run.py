"""One call of a D-ODE sampler: identity, the core's lookup, the miss policy (auto-distill, stock, error), infotext.

A tail (img2img, Hires) uses only an entry fitted for exactly that tail; see docs/webui.md.
"""
from ..lambdas.match import Request
from ..lambdas.resolve import miss_action, unserved
from ..samplers import sample
from .distill import auto_distill
from .generation import cfg_scale, is_flow, is_tail, on_fitted_schedule, refiner_active
from .identity import identity
from .names import INFOTEXT_FIT, INFOTEXT_KEY, INFOTEXT_SCHEDULE, label_for
from .report import log_once, prefix, set_info, tell_user
from .settings import error_on_miss, how_to_fit, miss_policy, opt
from .sources import lookup, skipped_files


def blocker(p):
    """Why no λ can be looked up for this generation, or None."""
    if refiner_active(p):
        return "a refiner switches models mid-schedule; λ is fitted for one model"
    return None if identity(p)[0] is not None else "the checkpoint has no file to hash"


def run(name, model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Samples with the λ that serves this call, else as the miss policy says."""
    p = getattr(model, "p", None)
    pre = prefix(p)
    tail = is_tail(p, model, sigmas)
    cfg = cfg_scale(p, extra_args)
    flow = is_flow(model)
    lambdas, ref, problem = None, "none", blocker(p)
    ident, info = identity(p) if problem is None else (None, None)
    if problem is None:
        lambdas, why = lookup(name, ident, info, sigmas, cfg)
        ref = why if lambdas is not None else ref
        for path, reason in skipped_files(info):
            tell_user(p, f"D-ODE: skipped the λ file {path}: {reason}")
    else:
        why = unserved(Request.grid(name, sigmas, None, cfg), problem)
    if lambdas is None:
        action = miss_action(miss_policy(tail), problem)
        if action == "distill":
            schedule = not tail and on_fitted_schedule(p) and bool(opt("dode_fit_schedule"))
            try:
                samples, ref, summary = auto_distill(name, model, x, sigmas, extra_args, disable, ident, info, cfg,
                                                     flow, schedule)
            except ValueError as e:  # a σ grid the fit cannot use (e.g. repeated σ): the stock sampler
                why = f"{why}; auto-distill failed: {e}"
                problem = f"auto-distill failed: {e}"
                action = miss_action("error" if error_on_miss(tail) else "stock")
            except BaseException as e:
                if type(e).__name__ == "InterruptedException":  # the WebUI's Interrupt: the image says so
                    set_info(p, pre + INFOTEXT_KEY, "interrupted during the fit (nothing saved)")
                raise
            else:
                set_info(p, pre + INFOTEXT_KEY, ref)
                set_info(p, pre + INFOTEXT_FIT, summary)
                if schedule:
                    set_info(p, pre + INFOTEXT_SCHEDULE, f"fitted {ref}")
                return samples
        what = f"{label_for(name)} ({'tail' if tail else 'full'} schedule)"
        if action == "error":
            raise RuntimeError(f"D-ODE: {what}: {why}; {how_to_fit(tail)}")
        if opt("dode_miss_policy") != "stock sampler, silent":
            log_once((name, tuple(round(float(s), 5) for s in sigmas), cfg, why),
                     "D-ODE: %s, using the stock sampler: %s", what, why)
            tell_user(p, f"D-ODE: {label_for(name)} ran as the stock sampler (λ = 0): "
                         f"{problem or 'no λ fitted for this checkpoint, steps, schedule type and CFG scale'}"
                         f"{'' if problem else '; ' + how_to_fit(tail)}.")
    set_info(p, pre + INFOTEXT_KEY, ref)
    return sample(model, x, sigmas, sampler=name, lambdas=lambdas, extra_args=extra_args, callback=callback,
                  disable=disable, flow=flow)


def sampler_function(name):
    """A k-diffusion-style sampler function for the WebUI's KDiffusionSampler (no eta/n/σ_min/σ_max parameters)."""
    def sample_dode(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return run(name, model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)
    sample_dode.__name__ = sample_dode.__qualname__ = f"sample_dode_{name}"
    return sample_dode
