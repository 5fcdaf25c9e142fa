"""The schedule type "D-ODE fitted": the σ grid a fit chose for this generation, else the stock Karras grid."""
import torch

from .current_call import current_generation
from .generation import cfg_scale, refiner_active
from .identity import identity
from .names import FALLBACK_SCHEDULER, INFOTEXT_SCHEDULE, core_sampler, labels
from .report import log_once, prefix, set_info, tell_user
from .settings import how_to_fit, opt
from .sources import lookup_schedule


def sampler_label(p):
    """The WebUI label of the generation's sampler, or None."""
    return getattr(getattr(getattr(p, "sampler", None), "config", None), "name", None)


def schedule_for(p, steps, sigma_max):
    """(fitted entry, infotext reference) for the generation ``p``, or (None, reason)."""
    label = sampler_label(p)
    name = core_sampler(label)
    if name is None:
        return None, f"the sampler {label} has no D-ODE solver to fit a schedule for"
    if refiner_active(p):
        return None, "a refiner switches models mid-schedule; a schedule is fitted for one model"
    ident, info = identity(p)
    if ident is None:
        return None, "the checkpoint has no file to hash"
    return lookup_schedule(name, ident, info, steps, sigma_max, cfg_scale(p, None))


def will_fit(p):
    """True if this generation's D-ODE sampler auto-distills a schedule on a miss (full pass, settings on)."""
    return (sampler_label(p) in labels() and not getattr(p, "is_hr_pass", False) and bool(opt("dode_auto_distill"))
            and bool(opt("dode_fit_schedule")))


def fitted_schedule(n, sigma_min, sigma_max, inner_model=None, device="cpu", rho=7.0):
    """The σ grid fitted for ``n`` steps from ``sigma_max`` to 0, else the stock Karras grid (need_inner_model)."""
    from modules import sd_schedulers
    stock = sd_schedulers.schedulers_map[FALLBACK_SCHEDULER]
    p = current_generation(inner_model)
    if p is None:
        entry, found = None, "no generation settings reached the schedule (a run without the WebUI's scripts)"
    else:
        entry, found = schedule_for(p, n, sigma_max)
    key = prefix(p) + INFOTEXT_SCHEDULE
    if entry is None:
        set_info(p, key, f"{stock.label} (no fit)")
        if will_fit(p):
            log_once(("schedule", n, round(float(sigma_max), 5), found), "D-ODE fitted: no fitted schedule yet (%s); "
                     "auto-distill fits one now, starting from %s", found, stock.label)
        else:
            log_once(("schedule", n, round(float(sigma_max), 5), found), "D-ODE fitted: using the stock %s schedule: "
                     "%s", stock.label, found)
            tell_user(p, f"D-ODE fitted: this image used the stock {stock.label} schedule: no fitted schedule for this "
                         f"checkpoint, sampler, steps and CFG scale; {how_to_fit(schedule=True)}.")
        return stock.function(n=n, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, device=device)
    set_info(p, key, f"fitted {found}")
    return entry.sigmas.to(device=device, dtype=torch.float32)
