"""Stub of comfy.samplers: the sampler-name lists, name resolution, KSAMPLER, CFGGuider and the σ schedulers."""
import math
from typing import Callable, NamedTuple

import torch

from . import model_management
from .k_diffusion import sampling as k_diffusion_sampling

KSAMPLER_NAMES = ["euler", "heun", "dpmpp_2s_ancestral", "dpmpp_2m", "dpmpp_3m_sde", "ipndm", "deis"]  # (abridged)
SAMPLER_NAMES = KSAMPLER_NAMES + ["ddim", "uni_pc", "uni_pc_bh2"]  # a separate list, as in ComfyUI


def simple_scheduler(model_sampling, steps):
    s = model_sampling
    ss = len(s.sigmas) / steps
    return torch.FloatTensor([float(s.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def karras_scheduler(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])]).float()


class SchedulerHandler(NamedTuple):
    handler: Callable
    use_ms: bool = True  # handler(model_sampling, steps), else handler(n=, sigma_min=, sigma_max=)


SCHEDULER_HANDLERS = {"simple": SchedulerHandler(simple_scheduler),
                      "karras": SchedulerHandler(karras_scheduler, use_ms=False)}
SCHEDULER_NAMES = list(SCHEDULER_HANDLERS)  # a separate list object (KSampler.SCHEDULERS is this one)


def calculate_sigmas(model_sampling, scheduler_name, steps):
    handler = SCHEDULER_HANDLERS.get(scheduler_name)
    if handler is None:
        raise ValueError(f"invalid scheduler {scheduler_name}")
    if handler.use_ms:
        return handler.handler(model_sampling, steps)
    return handler.handler(n=steps, sigma_min=float(model_sampling.sigma_min),
                           sigma_max=float(model_sampling.sigma_max))


class KSamplerX0Inpaint:
    def __init__(self, model, sigmas):
        self.inner_model = model
        self.sigmas = sigmas

    def __call__(self, x, sigma, denoise_mask=None, model_options={}, seed=None):
        out = self.inner_model(x, sigma, model_options=model_options, seed=seed)
        if denoise_mask is not None:
            out = out * denoise_mask + self.latent_image * (1 - denoise_mask)
        return out


class KSAMPLER:
    def __init__(self, sampler_function, extra_options={}, inpaint_options={}):
        self.sampler_function = sampler_function
        self.extra_options = extra_options
        self.inpaint_options = inpaint_options

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        extra_args["denoise_mask"] = denoise_mask
        model_k = KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        model_k.noise = noise
        ms = model_wrap.inner_model.model_sampling
        sigma_max, first = float(ms.sigma_max), float(sigmas[0])
        max_denoise = math.isclose(sigma_max, first, rel_tol=1e-05) or first > sigma_max
        noise = ms.noise_scaling(sigmas[0], noise, latent_image, max_denoise)
        total_steps = len(sigmas) - 1

        def k_callback(x):
            if callback is not None:
                callback(x["i"], x["denoised"], x["x"], total_steps)

        samples = self.sampler_function(model_k, noise, sigmas, extra_args=extra_args, callback=k_callback,
                                        disable=disable_pbar, **self.extra_options)
        return ms.inverse_noise_scaling(sigmas[-1], samples)


def ksampler(sampler_name, extra_options={}, inpaint_options={}):
    sampler_function = getattr(k_diffusion_sampling, f"sample_{sampler_name}")
    return KSAMPLER(sampler_function, extra_options, inpaint_options)


def sampler_object(name):
    if name == "ddim":
        return ksampler("euler", inpaint_options={"random": True})
    return ksampler(name)


def _copy_nested(d):
    return {k: _copy_nested(v) if isinstance(v, dict) else (v.copy() if isinstance(v, list) else v)
            for k, v in d.items()}


def _cond_value(conds):
    return torch.stack([c[0].float().mean() for c in conds]).mean() if conds else torch.tensor(0.0)


class CFGGuider:
    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.original_conds = {}
        self.cfg = 1.0

    def set_conds(self, positive, negative):
        self.original_conds = {"positive": positive, "negative": negative}

    def set_cfg(self, cfg):
        self.cfg = cfg

    def __call__(self, x, timestep, model_options={}, seed=None):
        return self.predict_noise(x, timestep, model_options, seed)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        model_management.throw_exception_if_processing_interrupted()
        cond = self.inner_model.apply_model(x, timestep, self.conds["positive"].expand(x.shape[0]))
        if math.isclose(self.cfg, 1.0):
            return cond
        uncond = self.inner_model.apply_model(x, timestep, self.conds["negative"].expand(x.shape[0]))
        return uncond + (cond - uncond) * self.cfg

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        if sigmas.shape[-1] == 0:
            return latent_image
        self.conds = {k: _cond_value(v) for k, v in self.original_conds.items()}
        self.inner_model = self.model_patcher.model
        originals = {}
        for name, obj in self.model_patcher.object_patches.items():  # ComfyUI applies object patches on load
            originals[name] = getattr(self.inner_model, name)
            setattr(self.inner_model, name, obj)
        try:
            extra_args = {"model_options": _copy_nested(self.model_options), "seed": seed}
            samples = sampler.sample(self, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                                     disable_pbar)
            return self.inner_model.process_latent_out(samples.to(torch.float32))
        finally:
            for name, obj in originals.items():
                setattr(self.inner_model, name, obj)
            del self.inner_model


def sample(model, noise, positive, negative, cfg, device, sampler, sigmas, model_options={}, latent_image=None,
           denoise_mask=None, callback=None, disable_pbar=False, seed=None):
    guider = CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider.sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)


class KSampler:
    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES  # the same list object: in-place appends show up in the stock dropdown
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = set()

    def __init__(self, model, steps, device, sampler=None, scheduler=None, denoise=None, model_options={}):
        self.model = model
        self.device = device
        self.scheduler = scheduler if scheduler in self.SCHEDULERS else self.SCHEDULERS[0]
        self.sampler = sampler if sampler in self.SAMPLERS else self.SAMPLERS[0]
        self.set_steps(steps, denoise)

    def calculate_sigmas(self, steps):
        return calculate_sigmas(self.model.get_model_object("model_sampling"), self.scheduler, steps)

    def set_steps(self, steps, denoise=None):
        self.steps = steps
        if denoise is None or denoise > 0.9999:
            self.sigmas = self.calculate_sigmas(steps).to(self.device)
        elif denoise <= 0.0:
            self.sigmas = torch.FloatTensor([])
        else:
            self.sigmas = self.calculate_sigmas(int(steps / denoise)).to(self.device)[-(steps + 1):]

    def sample(self, noise, positive, negative, cfg, latent_image=None, denoise_mask=None, callback=None,
               disable_pbar=False, seed=None):
        return sample(self.model, noise, positive, negative, cfg, self.device, sampler_object(self.sampler),
                      self.sigmas, self.model.model_options, latent_image=latent_image, denoise_mask=denoise_mask,
                      callback=callback, disable_pbar=disable_pbar, seed=seed)
