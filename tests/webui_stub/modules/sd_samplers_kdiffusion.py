"""Stub: KDiffusionSampler keeps the sampler function (a callable funcname is used as it is), has its own
k-diffusion wrapper ``model_wrap`` (ascending ``sigmas`` of an SD1.5-like model) and builds σ grids the way A1111
1.10's ``get_sigmas(p, steps)`` does: the schedule type (Hires: ``hr_scheduler``; "Automatic": the sampler's default),
the model's σ range, ``inner_model`` for types that need it, and "Schedule type" in the infotext."""
from types import SimpleNamespace

import torch

sampler_extra_params = {}


def model_wrap():
    sigmas = torch.linspace(0.0292, 14.6146, 1000)
    uniform = lambda n: torch.cat([torch.linspace(float(sigmas[-1]), float(sigmas[0]), n), torch.zeros(1)])
    return SimpleNamespace(sigmas=sigmas, get_sigmas=uniform)


class KDiffusionSampler:
    def __init__(self, funcname, sd_model, options=None):
        self.funcname = funcname
        self.extra_params = sampler_extra_params.get(funcname, [])
        self.options = options or {}
        self.func = funcname if callable(funcname) else None
        self.sd_model = sd_model
        self.config = None
        self.model_wrap = model_wrap()

    def get_sigmas(self, p, steps):
        from . import sd_schedulers
        name = (p.hr_scheduler if p.is_hr_pass else p.scheduler) or "Automatic"
        if name == "Automatic":
            name = self.config.options.get("scheduler", None)
        scheduler = sd_schedulers.schedulers_map.get(name)
        sigma_min, sigma_max = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        if scheduler is None or scheduler.function is None:
            return self.model_wrap.get_sigmas(steps).cpu()
        if scheduler.label != "Automatic" and not p.is_hr_pass:
            p.extra_generation_params["Schedule type"] = scheduler.label
        kwargs = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        if scheduler.need_inner_model:
            kwargs["inner_model"] = self.model_wrap
        return scheduler.function(n=steps, **kwargs, device="cpu").cpu()


def stock(label, aliases, options):
    from .sd_samplers_common import SamplerData
    return SamplerData(label, lambda model: KDiffusionSampler("sample_" + label.lower(), model), aliases, options)


samplers_data_k_diffusion = [
    stock("DPM++ 2M", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    stock("Euler", ["k_euler"], {}),
    stock("Heun", ["k_heun"], {"second_order": True}),
    stock("DPM++ SDE", ["k_dpmpp_sde"], {"scheduler": "karras", "brownian_noise": True}),
]
