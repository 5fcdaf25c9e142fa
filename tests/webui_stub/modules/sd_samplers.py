"""Stub of the WebUI's sampler registry: the module-level lists and maps, set_samplers() and the cached
get_sampler_and_scheduler(), which strips a trailing schedule type and falls back to the first sampler."""
import functools

from . import sd_samplers_kdiffusion, sd_schedulers, shared

all_samplers = [*sd_samplers_kdiffusion.samplers_data_k_diffusion]
all_samplers_map = {x.name: x for x in all_samplers}
samplers = []
samplers_for_img2img = []
samplers_map = {}
samplers_hidden = set()


def set_samplers():
    global samplers, samplers_for_img2img, samplers_hidden
    samplers_hidden = set(shared.opts.hide_samplers)
    samplers = all_samplers
    samplers_for_img2img = all_samplers
    samplers_map.clear()
    for sampler in all_samplers:
        samplers_map[sampler.name.lower()] = sampler.name
        for alias in sampler.aliases:
            samplers_map[alias.lower()] = sampler.name


def visible_sampler_names():
    return [x.name for x in samplers if x.name not in samplers_hidden]


def create_sampler(name, model):
    config = all_samplers_map.get(name)
    assert config is not None, f"bad sampler name: {name}"
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


@functools.cache
def get_sampler_and_scheduler(sampler_name, scheduler_name):
    found = sd_schedulers.schedulers_map.get(scheduler_name, sd_schedulers.schedulers[0])
    name = sampler_name or samplers[0].name
    for scheduler in sd_schedulers.schedulers:
        for option in [scheduler.label, scheduler.name, *(scheduler.aliases or [])]:
            if name.endswith(" " + option):
                found = scheduler
                name = name[:-(len(option) + 1)]
                break
    return all_samplers_map.get(name, samplers[0]).name, found.label


set_samplers()
