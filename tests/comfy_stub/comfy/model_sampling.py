"""Stub of comfy.model_sampling: EPS and rectified-flow (CONST) parameterizations with discrete σ tables."""
import torch


class EPS:
    def calculate_input(self, sigma, noise):
        return noise / (sigma.reshape(sigma.shape + (1,) * (noise.ndim - 1)) ** 2 + 1) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * sigma.reshape(sigma.shape + (1,) * (model_output.ndim - 1))

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        if max_denoise:
            return noise * torch.sqrt(1.0 + sigma ** 2.0) + latent_image
        return noise * sigma + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class CONST:
    def calculate_input(self, sigma, noise):
        return noise

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * sigma.reshape(sigma.shape + (1,) * (model_output.ndim - 1))

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - sigma)


class ModelSamplingDiscrete(torch.nn.Module):
    """Scaled-linear β schedule, 1000 steps (SD1.x-like): σ ∈ [0.0292, 14.6]."""

    def __init__(self, linear_start=0.00085, linear_end=0.012, timesteps=1000):
        super().__init__()
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.register_buffer("sigmas", (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float())

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return (sigma.log().reshape(-1, 1) - self.sigmas.log().reshape(1, -1)).abs().argmin(dim=1).float()

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigmas[int(round((1.0 - percent) * 999))])


class ModelSamplingDiscreteFlow(torch.nn.Module):
    """σ = shift·t / (1 + (shift − 1)·t) on t = 1/1000 … 1 (SD3-like)."""

    def __init__(self, shift=3.0, multiplier=1000, timesteps=1000):
        super().__init__()
        self.shift = shift
        self.multiplier = multiplier
        t = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps
        self.register_buffer("sigmas", self.sigma(t).float())

    def sigma(self, t):
        return self.shift * t / (1 + (self.shift - 1) * t)

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        return sigma * self.multiplier

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor(1.0 - percent, dtype=torch.float64)))

