"""Stub of comfy.sample: noise, empty-latent fix and the two sampling entry points the nodes use."""
import torch

from . import model_management, samplers


def prepare_noise(latent_image, seed, noise_inds=None):
    generator = torch.manual_seed(seed)
    return torch.randn(latent_image.size(), dtype=torch.float32, generator=generator, device="cpu")


def fix_empty_latent_channels(model, latent_image, downscale_ratio_spacial=None, downscale_ratio_temporal=None):
    channels = model.get_model_object("latent_format").latent_channels
    if channels != latent_image.shape[1] and torch.count_nonzero(latent_image) == 0:
        latent_image = latent_image[:, :1].repeat(1, channels, *([1] * (latent_image.ndim - 2)))
    return latent_image


def sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0,
           noise_mask=None, callback=None, disable_pbar=False, seed=None):
    ks = samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name, scheduler=scheduler,
                           denoise=denoise, model_options=model.model_options)
    samples = ks.sample(noise, positive, negative, cfg=cfg, latent_image=latent_image, denoise_mask=noise_mask,
                        callback=callback, disable_pbar=disable_pbar, seed=seed)
    return samples.to(model_management.intermediate_device())


def sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, noise_mask=None,
                  callback=None, disable_pbar=False, seed=None):
    samples = samplers.sample(model, noise, positive, negative, cfg, model.load_device, sampler, sigmas,
                              model_options=model.model_options, latent_image=latent_image, denoise_mask=noise_mask,
                              callback=callback, disable_pbar=disable_pbar, seed=seed)
    return samples.to(model_management.intermediate_device())
