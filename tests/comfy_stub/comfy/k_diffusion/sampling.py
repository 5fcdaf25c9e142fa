"""Stub of comfy.k_diffusion.sampling: the stock samplers the dode pack maps its ``*_dode`` names to.

Euler is the k-diffusion update written out. The others run the dode core's stock (λ = 0) update behind ComfyUI's
signatures, except DEIS, whose coefficients come from a coarser quadrature (standing in for ComfyUI's own float32
computation of them): so a ``deis_dode`` that ran the core instead of the host's sampler differs in the last bits, as
it does in a real ComfyUI. The ancestral and
SDE samplers implement only ``eta = 0`` (their ODE), which is how the pack calls them."""
import importlib

import torch


def _core():
    """The dode core (imported on use: importing ``dode`` inside ComfyUI loads the pack, which imports this module)."""
    return importlib.import_module("dode.samplers")


HOST_DEIS_NODES = 5000  # the core integrates with 10000 nodes


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                 s_tmax=float("inf"), s_noise=1.0):
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma_hat = sigmas[i]
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat * s_in, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


def _flow(model):
    """What ComfyUI's 2S/3M do differently for rectified-flow (CONST) models: the core's ``flow`` option."""
    from comfy import model_sampling
    ms = model.inner_model.inner_model.model_sampling
    return float(ms.percent_to_sigma(1e-4)) if isinstance(ms, model_sampling.CONST) else False


def _ode_only(name, eta):
    if eta != 0:
        raise NotImplementedError(f"stub {name}: only eta = 0 (the ODE) is implemented, got eta={eta}")


def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                s_tmax=float("inf"), s_noise=1.0):
    return _core().sample(model, x, sigmas, "heun", extra_args=extra_args, callback=callback, disable=disable)


def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    return _core().sample(model, x, sigmas, "dpmpp_2m", extra_args=extra_args, callback=callback, disable=disable)


def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                              noise_sampler=None):
    _ode_only("dpmpp_2s_ancestral", eta)
    return _core().sample(model, x, sigmas, "dpmpp_2s", extra_args=extra_args, callback=callback, disable=disable,
                       flow=_flow(model))


def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None):
    _ode_only("dpmpp_3m_sde", eta)
    return _core().sample(model, x, sigmas, "dpmpp_3m", extra_args=extra_args, callback=callback, disable=disable,
                       flow=_flow(model))


def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4):
    return _core().sample(model, x, sigmas, "ipndm", extra_args=extra_args, callback=callback, disable=disable)


@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3, deis_mode="tab"):
    """tAB-DEIS, host-computed coefficients: x_{i+1} = x_i + Σ_j c_ij d_{i−j}, Euler on the first step and to σ = 0."""
    extra_args = {} if extra_args is None else extra_args
    multistep = importlib.import_module("dode.samplers.multistep")
    coefs = multistep.deis_coefficients(sigmas, nodes=HOST_DEIS_NODES)
    s_in = x.new_ones([x.shape[0]])
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i] * s_in, denoised)
        ds = [d] + ds[:max_order - 1]
        if coefs[i]:
            x = x + sum(c * past for c, past in zip(coefs[i], ds))
        else:
            x = x + (sigmas[i + 1] - sigmas[i]) * d
    return x
