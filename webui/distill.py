"""Auto-distill inside the sampler call: fit on this batch, save to models/D-ODE (or keep the fit), sample."""
from ..lambdas import distill
from ..lambdas.resolve import save_or_keep
from ..samplers import nfe
from .generation import model_sigma_range
from .paths import distill_file, lambda_dir
from .report import log, tell_user
from .settings import fit_settings
from .sources import entry_ref, store_for


def pinned(model, sigmas):
    """``model`` with ``model.step`` (the WebUI's CFG-denoiser call count) pinned to the student step of σ."""
    if not hasattr(model, "step"):
        return model
    grid = sigmas.detach().double().cpu()[:-1]

    def call(x, sigma, **kwargs):
        s = float(sigma.flatten()[0])
        model.step = max(0, int((grid >= s * (1 - 1e-6)).sum()) - 1)
        return model(x, sigma, **kwargs)
    return call


def progress_to(state):
    """A fit callback that shows the fit's phase in the WebUI's progress text."""
    def progress(d):
        if state is not None:
            state.textinfo = f"D-ODE: fitting λ ({d['phase']} {d['i'] + 1}/{d['total']})"
    return progress


def fit_summary(objective, schedule, teacher, fit):
    """The ``D-ODE fit`` infotext: objective, teacher, RMSE before → after, calls, seconds."""
    r = fit.report
    return (f"{objective}{' + schedule' if schedule else ''}, {teacher} x{fit.scale}, "
            f"rmse {r.rmse_stock:.4g} -> {r.rmse_after:.4g}, {r.network_calls} calls, {r.seconds:.1f} s")


def auto_distill(name, model, x, sigmas, extra_args, disable, ident, info, cfg, flow=False, schedule=False):
    """Fits λ (with ``schedule`` also the σ grid) on this batch, saves it; returns (samples, reference, summary)."""
    from modules import shared
    teacher, scale, objective = fit_settings(schedule)
    step0 = getattr(model, "step", None)
    try:
        fit = distill(pinned(model, sigmas), x, sigmas, sampler=name, teacher=teacher, scale=scale,
                      extra_args=extra_args, callback=progress_to(getattr(shared, "state", None)), disable=disable,
                      flow=flow, objective=objective, schedule=schedule,
                      sigma_range=model_sigma_range(model) if schedule else None, compare_stock=objective == "greedy")
    finally:
        if step0 is not None:  # the teacher's extra calls must not advance the WebUI's step count
            model.step = step0 + nfe(name, sigmas)
    entry = fit.entry(model=ident, cfg=cfg, host="webui", checkpoint=getattr(info, "title", None) or "")
    path = distill_file(info, ident)
    store = store_for([lambda_dir()])
    summary = fit_summary(objective, schedule, teacher, fit)
    saved, why = save_or_keep(entry, lambda e: store.add(path, e))
    if why:  # a read-only folder, a damaged file in the way: the fit is used and kept (resolve.save_or_keep)
        log.error("D-ODE: %s: %s (%s)", entry.describe(), why, fit.report.summary())
        tell_user(getattr(model, "p", None), f"D-ODE: {why}. To keep fits after a restart, fix what is named here, "
                  "or start the WebUI with --models-dir on a writable folder.")
        return fit.samples, "not saved", summary
    log.info("D-ODE: distilled for %s into %s: %s", entry.describe(), path, fit.report.summary())
    return fit.samples, entry_ref(store, path, entry), summary
