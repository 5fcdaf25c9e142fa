"""Peak memory of a fit on video latents: the most tensor memory live at once during dode.distill (final objective,
with the σ schedule) beyond its inputs, in latent batches (one float32 tensor of x's shape), for (B, 16, T, H, W)
latents of a flow model with a shift.

The denoiser is an exact flow-matching Gaussian whose call allocates only its output, so what is measured is the
fit's own memory (its states, trajectories, Jacobian and temporaries), not a network's activations. Live memory is
the running sum of torch.profiler's CPU allocation events.

    python -m dode.lab.benchmarks.memory          # prints the table, writes memory.json
"""
import torch

from ...lambdas import distill
from ..protocol import write_json

CASES = ((1, 4), (2, 4), (2, 8), (1, 8))  # (batch, steps)
LATENT = (16, 21, 60, 104)  # (C, T, H, W): Wan 2.1's latent of an 81-frame 832×480 video
SHIFT = 5.0


class FlowGaussian:
    """D(x, σ) = (1 − σ) x / ((1 − σ)² + σ²): the flow-matching denoiser of unit Gaussian data, one allocation."""

    def __call__(self, x, sigma, **extra_args):
        s = float(sigma.flatten()[0])
        return x * ((1 - s) / ((1 - s) ** 2 + s * s))


def shifted_grid(steps, shift=SHIFT):
    """σ = shift·t / (1 + (shift − 1) t) on uniform t from 1 to 0 (ComfyUI's ModelSamplingSD3 on a uniform grid)."""
    t = torch.linspace(1, 0, steps + 1)
    return shift * t / (1 + (shift - 1) * t)


def live_peak(fn):
    """``(result, bytes)``: the most CPU tensor memory live at once while ``fn()`` runs, beyond what was live before."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return result, peak


def measure(batch, steps, sampler="euler", latent=LATENT):
    """One row: the peak in latent batches and the network calls."""
    x = torch.randn(batch, *latent, generator=torch.Generator().manual_seed(0))
    fit, peak = live_peak(lambda: distill(FlowGaussian(), x, shifted_grid(steps), sampler, objective="final",
                                          schedule=True, flow=True, disable=True))
    return {"batch": batch, "steps": steps, "sampler": sampler, "peak_latents": peak / (x.numel() * 4),
            "bar": 20 + steps, "network_calls": fit.report.network_calls}


def run(cases=CASES, log=print):
    torch.set_num_threads(1)
    rows = [measure(batch, steps) for batch, steps in cases]
    log("| latents | steps | peak (latent batches) | bar 20 + steps | network calls |\n|---|---|---|---|---|")
    for r in rows:
        log(f"| {r['batch']}×{'×'.join(map(str, LATENT))} | {r['steps']} | {r['peak_latents']:.1f} | {r['bar']} | "
            f"{r['network_calls']} |")
    return {"latent": list(LATENT), "shift": SHIFT, "rows": rows}


if __name__ == "__main__":
    write_json(run(), "memory.json")
    print("wrote memory.json")
