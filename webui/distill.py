"""Auto-distill inside the sampler call: fit on this batch, save to models/D-ODE (or keep the fit), sample."""
from ..lambdas import distill
from ..lambdas.fit import RELIABLE_LATENTS, small_batch
from ..lambdas.progress import FitProgress, fit_generations, fit_phases
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


def progress_to(state, count, generations):
    """A fit callback that moves the WebUI's progress bar (its sampling step over the fit's phases, so the bar shows
    a percent and an ETA) and says in its text what runs: the first use of these settings, its cost."""
    def progress(d):
        if state is not None:
            done, total = count.update(d)
            state.sampling_step, state.sampling_steps = done, total
            state.textinfo = (f"D-ODE: fitting for these settings (first use, up to {generations:.0f}× this "
                              f"generation): {d['phase']}, {100 * done // total}%")
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
    state = getattr(shared, "state", None)
    steps0 = getattr(state, "sampling_steps", None)
    count = FitProgress(len(sigmas) - 1, fit_phases(objective, compare_stock=objective == "greedy"))
    generations = fit_generations(x, sigmas, name, teacher, objective, schedule, scale, flow)
    step0 = getattr(model, "step", None)
    advice = small_batch(x.shape[0])
    if advice:
        log.warning("D-ODE: %s; the generation that fits these settings should use the largest batch size you can "
                    "(%d or more; the stock Batch size slider stops at 8)", advice, RELIABLE_LATENTS)
        tell_user(getattr(model, "p", None), f"D-ODE: these settings were fitted on a batch of {x.shape[0]}, which "
                  "may fit only these seeds. For a fit that holds, remove it under \"D-ODE λ files\" and generate "
                  f"once with the largest Batch size you can ({RELIABLE_LATENTS} or more is best).")
    try:
        fit = distill(pinned(model, sigmas), x, sigmas, sampler=name, teacher=teacher, scale=scale,
                      extra_args=extra_args, callback=progress_to(state, count, generations), disable=disable,
                      flow=flow, objective=objective, schedule=schedule,
                      sigma_range=model_sigma_range(model) if schedule else None, compare_stock=objective == "greedy")
    finally:
        if step0 is not None:  # the teacher's extra calls must not advance the WebUI's step count
            model.step = step0 + nfe(name, sigmas)
        if steps0 is not None:  # the generation's own bar again, at its end: the fit gave its samples
            state.sampling_step = state.sampling_steps = steps0
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
