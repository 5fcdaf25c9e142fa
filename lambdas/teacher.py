"""The teacher: its σ grid, its run, and the greedy fit's cost that budgets every final fit."""
import torch

from ..samplers import get_solver, landing_sigmas, nfe

DEFAULT_TEACHER = "dpmpp_2m"  # measured: same λ quality as a Heun teacher at half its network calls (docs)
DEFAULT_SCALE = 10


def teacher_grid(sigmas, landings, scale, rho=7.0):
    """The teacher's σ grid: every student σ and landing σ, each interval split into ``scale`` sub-steps uniform
    in σ^(1/ρ) (the Karras spacing), so the grid refines every student interval. Float64, decreasing."""
    knots = torch.unique(torch.cat([sigmas.double().cpu(), landings.double().cpu()])).flip(0)
    lo, hi = knots[1:] ** (1 / rho), knots[:-1] ** (1 / rho)
    frac = torch.arange(scale, dtype=torch.float64) / scale
    inner = (hi[:, None] + (lo - hi)[:, None] * frac[None, :]) ** rho
    inner[:, 0] = knots[:-1]
    return torch.cat([inner.flatten(), knots[-1:]])


def host_teacher_grid(grid, sigmas):
    """The teacher grid on the host's device, in its σ dtype but at least float32 (an fp16 grid underflows)."""
    return grid.to(sigmas.device, torch.promote_types(sigmas.dtype, torch.float32))


def progress(callback, phase, total):
    """Adapts a ``{"phase", "i", "total", "x", "denoised"}`` progress callback to a sampler callback (``x`` and
    ``denoised`` are the sampler's current state and model output, for previews; None if it gives none)."""
    if callback is None:
        return None
    return lambda info: callback({"phase": phase, "i": info["i"], "total": total, "x": info.get("x"),
                                  "denoised": info.get("denoised")})


def run_teacher(model, x, grid, teacher, extra_args, callback, disable, keep, observe=None):
    """Runs the teacher on ``grid`` and keeps its states at the grid indices in ``keep`` (the final one included);
    ``observe`` also sees every step's callback."""
    states = {}
    report = progress(callback, "teacher", len(grid) - 1)

    def record(info):
        if info["i"] in keep:
            states[info["i"]] = info["x"]
        if observe is not None:
            observe(info)
        if report is not None:
            report(info)

    final = get_solver(teacher).fn(model, x, grid, extra_args=extra_args, callback=record, disable=disable)
    states[len(grid) - 1] = final
    return states, final


def greedy_rows(x, sigmas, sampler, teacher, flow, scale=DEFAULT_SCALE):
    """The network rows of the paper's greedy fit of ``sampler`` on ``sigmas`` for the batch x: one teacher run at
    ``scale`` on the grid refined around every landing σ, plus one student run. At DEFAULT_SCALE: the final fit's
    budget unit."""
    landings = landing_sigmas(sampler, sigmas, flow).double().cpu()
    return (nfe(teacher, teacher_grid(sigmas, landings, scale)) + len(landings)) * x.shape[0]
