"""The D-ODE samplers and the schedule type "D-ODE fitted" in the WebUI's lists (A1111 path and Forge's add_sampler)."""
import torch

from ..samplers import SAMPLER_NAMES, SOLVERS, nfe
from .names import SCHEDULER_LABEL, SCHEDULER_NAME, label_for
from .report import log
from .run import sampler_function
from .schedule import fitted_schedule

STOCK_OPTION_KEYS = ("scheduler",)  # options copied from the stock WebUI sampler of the same label


def sampler_options(name, stock_map):
    """SamplerData options: second_order from the solver's evaluation count, default schedule from the stock twin."""
    options = {}
    probe = torch.tensor([2.0, 1.0, 0.5, 0.0])
    if nfe(name, probe) > len(probe) - 1:
        options["second_order"] = True
    stock = stock_map.get(SOLVERS[name].label) if name in SOLVERS else None
    for key in STOCK_OPTION_KEYS:
        if stock is not None and key in getattr(stock, "options", {}):
            options[key] = stock.options[key]
    return options


def scheduler_suffixes():
    """Every word the WebUI strips off a sampler label as a schedule type (labels, ids, aliases)."""
    try:
        from modules import sd_schedulers
    except ImportError:
        return []
    names = []
    for s in sd_schedulers.schedulers:
        names += [s.label, s.name, *(getattr(s, "aliases", None) or [])]
    return names


def clear_sampler_cache(sd_samplers):
    """Clears the cache of ``get_sampler_and_scheduler``, which maps (sampler, schedule type) names."""
    cache = getattr(getattr(sd_samplers, "get_sampler_and_scheduler", None), "cache_clear", None)
    if cache is not None:
        cache()


def register():
    """Adds one WebUI sampler per core sampler; returns the labels added. Safe to call again (Reload UI)."""
    from modules import sd_samplers, sd_samplers_common, sd_samplers_kdiffusion

    add_sampler = getattr(sd_samplers, "add_sampler", None)  # Forge; A1111/reForge/Classic: manual path
    suffixes = scheduler_suffixes()
    added = []
    for name in SAMPLER_NAMES:
        label = label_for(name)
        if label in sd_samplers.all_samplers_map:
            continue
        clash = [s for s in suffixes if label.endswith(" " + s)]
        if clash:  # the WebUI would silently run DPM++ 2M instead
            log.error("D-ODE: not registering %r: it ends in the schedule type %r", label, clash[0])
            continue
        fn = sampler_function(name)
        data = sd_samplers_common.SamplerData(
            label, lambda model, fn=fn: sd_samplers_kdiffusion.KDiffusionSampler(fn, model),
            [], sampler_options(name, sd_samplers.all_samplers_map))  # no aliases: the API never resolves them
        if add_sampler is not None:
            add_sampler(data)
        else:
            sd_samplers.all_samplers.append(data)
            sd_samplers.all_samplers_map[label] = data
        added.append(label)
    if added:
        if add_sampler is None:
            sd_samplers.set_samplers()
        clear_sampler_cache(sd_samplers)
    return added


def register_scheduler():
    """Adds the schedule type "D-ODE fitted" (A1111 1.9+, Forge); True if added. Safe to call again (Reload UI)."""
    try:
        from modules import sd_schedulers
    except ImportError:  # a WebUI without schedule types (before 1.9)
        return False
    if SCHEDULER_LABEL in sd_schedulers.schedulers_map:
        return False
    scheduler = sd_schedulers.Scheduler(SCHEDULER_NAME, SCHEDULER_LABEL, fitted_schedule, default_rho=7.0,
                                        need_inner_model=True)
    sd_schedulers.schedulers.append(scheduler)
    sd_schedulers.schedulers_map[SCHEDULER_NAME] = sd_schedulers.schedulers_map[SCHEDULER_LABEL] = scheduler
    try:
        from modules import sd_samplers
    except ImportError:
        return True
    clear_sampler_cache(sd_samplers)
    return True
