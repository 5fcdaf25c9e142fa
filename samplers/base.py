"""Shared pieces of the D-ODE samplers: σ-grid checks, the ODE derivative and the λ providers.

Every solver writes the state after network evaluation ``i`` as

    x_next = x_plain + λ_i · c_i · (out_i − prev_i)

where ``x_plain`` is the stock update, ``out_i`` is the output the solver corrects (the denoised D, or the combined
multistep estimate), ``prev_i`` the previous evaluation's output (the initial state x for the first one), and ``c_i``
the scalar by which the stock update depends on ``out_i``. That is the paper's ``D~ = D + λ (D − D_prev)`` pushed
through the update. A *provider* gets ``(i, x, x_plain, c_i, out_i, prev_i, σ_next)``, with x the state at the start
of the step, and turns them into the next state: a fixed λ vector for sampling, or the
closed-form fit in ``lambdas/fit.py``.
"""
import torch


def append_dims(x, target_dims):
    """Appends trailing singleton dimensions to x until it has target_dims dimensions."""
    return x[(...,) + (None,) * (target_dims - x.ndim)]


def to_d(x, sigma, denoised):
    """The probability-flow ODE derivative dx/dσ = (x − D) / σ."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def check_sigmas(sigmas, min_steps=1):
    """Checks a σ grid: 1-D, finite, strictly decreasing, positive except for an optional final 0."""
    if not torch.is_tensor(sigmas) or sigmas.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D tensor of noise levels, got {type(sigmas).__name__} "
                         f"with shape {tuple(getattr(sigmas, 'shape', ()))}")
    steps = len(sigmas) - 1
    if steps < min_steps:
        raise ValueError(f"the σ grid has {steps} step(s); at least {min_steps} are needed "
                         f"(pass steps + 1 noise levels, e.g. 10 steps = 11 sigmas ending in 0)")
    values = sigmas.detach().double().cpu()
    if not torch.isfinite(values).all():
        raise ValueError("sigmas contain NaN or infinity; pass a finite σ grid")
    if not (values[1:] < values[:-1]).all():
        raise ValueError(f"sigmas must be strictly decreasing, got {_short(values)}; D-ODE samplers integrate from "
                         "high to low noise (restart/unsampling grids are not supported with λ)")
    if not (values[:-1] > 0).all() or values[-1] < 0:
        raise ValueError(f"sigmas must be positive, with 0 allowed only as the last value, got {_short(values)}")


def karras_sigmas(n, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """The Karras et al. (2022) grid: n noise levels uniform in σ^(1/ρ) from σ_max to σ_min, then a final 0."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def check_batch(x):
    """Rejects an empty batch, which has nothing to sample and nothing to fit λ on."""
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"the batch is empty (x has shape {tuple(x.shape)}); pass at least one latent")


def _short(values):
    items = [f"{v:.4g}" for v in values.tolist()]
    return "[" + ", ".join(items if len(items) <= 8 else items[:4] + ["…"] + items[-3:]) + "]"


def apply_lambda(lam, x_plain, coef, out, prev):
    """x_plain + λ c (out − prev); exactly x_plain (the stock result) for λ = 0. Sampling with a fitted λ vector and
    the fit itself both go through here, so they produce the same bits."""
    return x_plain if lam == 0 else x_plain + (out - prev) * (lam * coef)


def no_lambdas(i, x, x_plain, coef, out, prev, sigma_next):
    """The stock sampler: every λ is 0."""
    return x_plain


class FixedLambdas:
    """A fitted λ vector, one value per network evaluation."""

    def __init__(self, lambdas, nfe, sampler):
        values = torch.as_tensor(lambdas, dtype=torch.float64).flatten().cpu()
        if len(values) != nfe:
            raise ValueError(f"{sampler} evaluates the network {nfe} times on this σ grid, but the λ vector has "
                             f"{len(values)} values; λ is only valid for the sampler and σ grid it was fitted on, "
                             "so fit λ for this grid (dode.distill) or use the matching grid")
        if not torch.isfinite(values).all():
            raise ValueError("the λ vector contains NaN or infinity; refit it")
        self.values = values.tolist()

    def __call__(self, i, x, x_plain, coef, out, prev, sigma_next):
        return apply_lambda(self.values[i], x_plain, coef, out, prev)


def lambda_provider(lambdas, sigmas, nfe, sampler):
    """Turns the ``lambdas`` argument of a sampler into a provider.

    ``None`` is the stock sampler (no checks beyond the stock ones); a sequence or tensor is a fixed λ vector, checked
    against the σ grid; a callable is used as it is (the fit)."""
    if lambdas is None:
        return no_lambdas
    check_sigmas(sigmas)
    if callable(lambdas):
        return lambdas
    return FixedLambdas(lambdas, nfe, sampler)

