"""D-DPM-Solver++ samplers (data prediction, exponential integrators in t = −log σ, or in the half-logSNR with flow)."""
import torch
from tqdm.auto import trange

from .base import lambda_provider, to_d


def sigma_fn(t):
    return t.neg().exp()


def t_fn(sigma):
    return sigma.log().neg()


def dpmpp_2m_landings(sigmas):
    """One evaluation per step, landing on σ_{i+1}."""
    return sigmas[1:]


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, lambdas=None):
    """DPM-Solver++(2M): x_{i+1} = (σ_{i+1}/σ_i) x_i − expm1(−h) D̄_i, D̄_i = (1 + 1/2r) D_i − (1/2r) D_{i−1}.

    λ acts on the combined estimate, D̄~_i = D̄_i + λ_i (D̄_i − D̄_{i−1}), so c_i = −expm1(−h); the multistep
    history keeps the raw D. With ``lambdas=None`` this is k-diffusion's sample_dpmpp_2m."""
    extra_args = {} if extra_args is None else extra_args
    correct = lambda_provider(lambdas, sigmas, len(sigmas) - 1, "dpmpp_2m")
    s_in = x.new_ones([x.shape[0]])
    prev = x
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            combined = denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            combined = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x_plain = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * combined
        x = correct(i, x, x_plain, -(-h).expm1(), combined, prev, sigmas[i + 1])
        prev, old_denoised = combined, denoised
    return x


FLOW_FIRST_SIGMA = 1 - 1e-4  # ComfyUI's offset for a first σ of 1 (percent_to_sigma(1e-4) of an unshifted schedule)
FLOW_MIDPOINT_AT_ONE = 0.9999  # ComfyUI's rectified-flow 2S evaluates a step from σ = 1 there


def flow_first_sigma(flow, sigmas):
    """Reads the ``flow`` option: None for VE/EDM models (``False``), else the σ that replaces a first σ ≥ 1.

    ``flow=True`` means 1 − 1e-4, ComfyUI's value for an unshifted schedule; a host passes its own for a shifted one
    (ComfyUI: ``model_sampling.percent_to_sigma(1e-4)``). Flow noise levels must lie in (0, 1]."""
    if not flow:
        return None
    if flow is not True and not 0 < flow < 1:
        raise ValueError(f"flow must be False, True or the flow model's offset first σ in (0, 1), got {flow!r}")
    if sigmas[0] > 1:
        raise ValueError(f"flow mode needs rectified-flow noise levels in (0, 1], got a first σ of "
                         f"{float(sigmas[0]):.4g}; pass flow=False for VE/EDM models")
    return FLOW_FIRST_SIGMA if flow is True else float(flow)


def flow_lambda_fn(sigma):
    """The rectified-flow half-logSNR log(α/σ) = log((1 − σ)/σ), as ComfyUI's 2S writes it."""
    return ((1 - sigma) / sigma).log()


def dpmpp_2s_midpoint(sigma, sigma_next, flow=False):
    """The 2S evaluation level σ_s: the midpoint of the step in −log σ (σ_s = √(σ σ_next)), or for flow models in
    the half-logSNR log((1 − σ)/σ), with σ_s = 0.9999 for a step from σ = 1 (ComfyUI's rectified-flow 2S)."""
    if not flow:
        t, t_next = t_fn(sigma), t_fn(sigma_next)
        return sigma_fn(t + (t_next - t) / 2)
    if sigma == 1:
        return sigma.new_tensor(FLOW_MIDPOINT_AT_ONE)
    lam, lam_next = flow_lambda_fn(sigma), flow_lambda_fn(sigma_next)
    return 1 / ((lam + (lam_next - lam) / 2).exp() + 1)


def dpmpp_2s_coefs(sigma, sigma_next, flow=False):
    """σ_s and the two first-order (DDIM) updates of a 2S step, x_s = r_s x + c_s D and x_next = r x + c D_s.

    VE: r_s = e^{−h/2}, c_s = −expm1(−h/2), r = e^{−h}, c = −expm1(−h) with h = log(σ/σ_next) (k-diffusion);
    flow: r_s = σ_s/σ, c_s = 1 − r_s, r = σ_next/σ, c = 1 − r (ComfyUI). Both are x_to = (σ_to/σ) x + (1 − σ_to/σ) D."""
    sigma_s = dpmpp_2s_midpoint(sigma, sigma_next, flow)
    if flow:
        r_s, r = sigma_s / sigma, sigma_next / sigma
        return sigma_s, r_s, 1 - r_s, r, 1 - r
    t, t_next = t_fn(sigma), t_fn(sigma_next)
    h = t_next - t
    return sigma_s, sigma_s / sigma_fn(t), -(-h / 2).expm1(), sigma_fn(t_next) / sigma_fn(t), -(-h).expm1()


def dpmpp_2s_landings(sigmas, flow=False):
    """Two evaluations per step, landing on σ_s (the midpoint) and on σ_{i+1}; a step to σ = 0 has one (Euler)."""
    levels = []
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        if sigma_next != 0:
            levels.append(dpmpp_2s_midpoint(sigma, sigma_next, bool(flow)))
        levels.append(sigma_next)
    return torch.stack(levels)


@torch.no_grad()
def sample_dpmpp_2s(model, x, sigmas, extra_args=None, callback=None, disable=None, lambdas=None, flow=False):
    """DPM-Solver++(2S) without noise: x_s = r_s x_i + c_s D~_i, then x_{i+1} = r x_i + c D~_s (see dpmpp_2s_coefs).

    One λ per evaluation: D~_i = D_i + λ (D_i − D_prev) only moves the midpoint state x_s; D~_s = D_s + λ' (D_s − D_i)
    corrects the update with c. A step to σ = 0 is one Euler step. With ``lambdas=None`` this is k-diffusion's
    sample_dpmpp_2s_ancestral with eta=0. ``flow`` (truthy, see flow_first_sigma) is ComfyUI's rectified-flow
    sample_dpmpp_2s_ancestral_RF with eta=0: the midpoint in log((1 − σ)/σ), 0.9999 from σ = 1, no first-σ offset."""
    extra_args = {} if extra_args is None else extra_args
    flow = flow_first_sigma(flow, sigmas) is not None
    correct = lambda_provider(lambdas, sigmas, len(dpmpp_2s_landings(sigmas)), "dpmpp_2s")
    s_in = x.new_ones([x.shape[0]])
    prev = x
    n = 0
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        if sigmas[i + 1] == 0:
            dt = sigmas[i + 1] - sigmas[i]
            x = correct(n, x, x + to_d(x, sigmas[i], denoised) * dt, -dt / sigmas[i], denoised, prev, sigmas[i + 1])
            n, prev = n + 1, denoised
            continue
        sigma_s, r_s, c_s, r, c = dpmpp_2s_coefs(sigmas[i], sigmas[i + 1], flow)
        x_2 = correct(n, x, r_s * x + c_s * denoised, c_s, denoised, prev, sigma_s)
        denoised_2 = model(x_2, sigma_s * s_in, **extra_args)
        x = correct(n + 1, x, r * x + c * denoised_2, c, denoised_2, denoised, sigmas[i + 1])
        n, prev = n + 2, denoised_2
    return x


def half_log_snr(sigma, flow):
    """λ = log(α/σ) as ComfyUI's 3M computes it: −log σ (VE, α = 1) or −logit σ (rectified flow, α = 1 − σ)."""
    return sigma.logit().neg() if flow else sigma.log().neg()


def dpmpp_3m_landings(sigmas, flow=False):
    """One evaluation per step, landing on σ_{i+1} (the flow first-σ offset moves an evaluation, not a landing)."""
    return sigmas[1:]


@torch.no_grad()
def sample_dpmpp_3m(model, x, sigmas, extra_args=None, callback=None, disable=None, lambdas=None, flow=False):
    """DPM-Solver++(3M) as an ODE, in the half-logSNR λ with h = λ_{i+1} − λ_i and α_{i+1} = σ_{i+1} e^{λ_{i+1}}:

        x_{i+1} = (σ_{i+1}/σ_i) x_i + α_{i+1} (1 − e^{−h}) D̄_i,   D̄_i = D_i + (φ₂ d1 − φ₃ d2) / (1 − e^{−h}),

    φ₂ = 1 − (1 − e^{−h})/h, φ₃ = φ₂/h − 1/2, d1 and d2 the divided differences of the last three D (one or none on
    the first steps); a step to σ = 0 returns D_i. λ acts on D̄ (c = α (1 − e^{−h})), the history stays raw.
    VE (``flow=False``): λ = −log σ, α = 1, and this is k-diffusion's sample_dpmpp_3m_sde with eta=0. ``flow``
    (see flow_first_sigma): λ = log((1 − σ)/σ), α = 1 − σ, a first σ ≥ 1 is replaced by the flow offset, and this is
    ComfyUI's sample_dpmpp_3m_sde with eta=0 on a CONST (rectified-flow) model."""
    extra_args = {} if extra_args is None else extra_args
    first_sigma = flow_first_sigma(flow, sigmas)
    flow = first_sigma is not None
    correct = lambda_provider(lambdas, sigmas, len(sigmas) - 1, "dpmpp_3m")
    if flow and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = first_sigma
    s_in = x.new_ones([x.shape[0]])
    prev = x
    denoised_1, denoised_2, h_1, h_2 = None, None, None, None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
        if sigmas[i + 1] == 0:
            x = correct(i, x, denoised, 1.0, denoised, prev, sigmas[i + 1])
            continue
        lam, lam_next = half_log_snr(sigmas[i], flow), half_log_snr(sigmas[i + 1], flow)
        h = lam_next - lam
        if flow:
            ratio, alpha = sigmas[i + 1] / sigmas[i], sigmas[i + 1] * lam_next.exp()
        else:
            ratio, alpha = (-h).exp(), 1.0
        c = (-h).expm1().neg()
        x_plain = ratio * x + (alpha * c) * denoised
        combined = denoised
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (denoised - denoised_1) / r0, (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_2 = (-h).expm1() / h + 1
            phi_3 = phi_2 / h - 0.5
            x_plain = x_plain + (alpha * phi_2) * d1 - (alpha * phi_3) * d2
            combined = denoised + (phi_2 * d1 - phi_3 * d2) / c
        elif h_1 is not None:
            d = (denoised - denoised_1) / (h_1 / h)
            phi_2 = (-h).expm1() / h + 1
            x_plain = x_plain + (alpha * phi_2) * d
            combined = denoised + d * (phi_2 / c)
        x = correct(i, x, x_plain, alpha * c, combined, prev, sigmas[i + 1])
        prev = combined
        denoised_1, denoised_2, h_1, h_2 = denoised, denoised_1, h, h_1
    return x
