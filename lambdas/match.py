"""Which λ entry serves a run: the request, an entry's differences from it, the nearest entry, one message format."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from .schema import known_sampling, same_sigma, shift_of

ANY = "any"  # a request field the caller does not know (the ComfyUI scheduler: sampler, cfg)
LAMBDA_HINT = ("λ is only valid for the exact model, sampler, σ grid, model sampling (shift) and CFG scale it was "
               "fitted on; distill λ for this setting (dode.distill or the Distill λ node)")
SCHEDULE_HINT = ("A fitted schedule is only valid for the exact model, sampler, number of steps, σ range, model "
                 "sampling (shift) and CFG scale it was fitted for; distill one for this setting "
                 "(dode.distill(..., schedule=True) or the Distill λ node)")


class LambdaNotFound(LookupError):
    """No λ entry matches the requested model, sampler, σ grid and CFG scale."""
    __module__ = "dode"  # its public name (dode.LambdaNotFound): hosts print it without the pack's install path


def as_models(model):
    """One identity or a sequence of them as a frozenset; None (any model) stays None."""
    return None if model is None else frozenset([model] if isinstance(model, str) else model)


@dataclass(frozen=True)
class Request:
    """What a run needs: λ for an exact σ grid (``sigmas``) or a fitted schedule (``steps`` from σ_max to σ_last)."""
    sampler: str
    models: frozenset | None = None
    cfg: float | None | str = None
    sigmas: torch.Tensor | None = None
    steps: int | None = None
    sigma_max: float | None = None
    sigma_last: float = 0.0
    sampling: str | None = None  # the host's model-sampling key (ComfyUI: shift, multiplier, σ range); None: any
    weights: str | None = None  # the host's key of the weights alone (ComfyUI: base and patches); None: unknown

    @classmethod
    def grid(cls, sampler, sigmas, model=None, cfg=None, sampling=None, weights=None):
        """λ for exactly the grid ``sigmas``."""
        sigmas = torch.as_tensor(sigmas).detach().double().cpu().flatten()
        return cls(sampler, as_models(model), as_cfg(cfg), sigmas=sigmas, sampling=known_sampling(sampling),
                   weights=weights)

    @classmethod
    def fitted(cls, sampler, steps, sigma_max, sigma_last=0.0, model=None, cfg=None, sampling=None, weights=None):
        """A fitted schedule of ``steps`` steps from ``sigma_max`` to ``sigma_last``."""
        return cls(sampler, as_models(model), as_cfg(cfg), steps=int(steps), sigma_max=float(sigma_max),
                   sigma_last=float(sigma_last), sampling=known_sampling(sampling), weights=weights)

    @property
    def schedule(self):
        return self.sigmas is None

    @property
    def hint(self):
        return SCHEDULE_HINT if self.schedule else LAMBDA_HINT

    def anyone(self):
        """The same request from any model (and any model sampling)."""
        return replace(self, models=None, sampling=None, weights=None)

    def describe(self):
        cfg = {ANY: "any cfg", None: "no cfg"}.get(self.cfg) or f"cfg {self.cfg:g}"
        models = "" if self.models is None else f", model {' or '.join(sorted(self.models))}"
        shift = shift_of(self.sampling)
        models = models if shift is None else f", shift {shift}{models}"
        sampler = "any sampler" if self.sampler == ANY else self.sampler
        if self.schedule:
            return (f"fitted {self.steps}-step {sampler} schedule, σ {self.sigma_max:.4g}→{self.sigma_last:.4g}, "
                    f"{cfg}{models}")
        s = self.sigmas
        return f"λ for {sampler}, {len(s) - 1} steps, σ {float(s[0]):.4g}→{float(s[-1]):.4g}, {cfg}{models}"


def sampling_difference(entry, request):
    """How two model-sampling keys differ: by their shifts where both have different ones, else in full."""
    shifts = shift_of(entry), shift_of(request)
    if None not in shifts and shifts[0] != shifts[1]:
        return f"shift {shifts[0]}, not {shifts[1]}"
    return f"model sampling {entry}, not {request}"


def as_cfg(cfg):
    return cfg if cfg is None or cfg == ANY else float(cfg)


def cfg_text(cfg):
    return "none" if cfg is None else f"{cfg:g}"


def differences(entry, request):
    """What differs between ``entry`` and ``request``; empty when the entry serves it."""
    diffs = []
    if request.schedule and entry.schedule != "fitted":
        diffs.append("a given grid, not a fitted schedule")
    if request.sampler != ANY and entry.sampler != request.sampler:
        diffs.append(f"sampler {entry.sampler}, not {request.sampler}")
    resampled = request.sampling is not None and entry.sampling is not None and entry.sampling != request.sampling
    same_weights = request.weights is not None and request.weights == entry.weights
    if request.models is not None and not request.models & entry.ids and not (resampled and same_weights):
        diffs.append(f"another model ({entry.metrics.get('model_name') or entry.model or 'unset'})")
    if resampled:
        diffs.append(sampling_difference(entry.sampling, request.sampling))
    diffs += range_differences(entry, request) if request.schedule else grid_differences(entry, request.sigmas)
    if request.cfg != ANY and entry.cfg != request.cfg:
        diffs.append(f"cfg {cfg_text(entry.cfg)}, not {cfg_text(request.cfg)}")
    return diffs


def grid_differences(entry, sigmas):
    """How ``entry``'s σ grid differs from ``sigmas``."""
    if entry.steps != len(sigmas) - 1:
        return [f"{entry.steps} steps, not {len(sigmas) - 1}"]
    if entry.same_grid(sigmas):
        return []
    delta = (sigmas - entry.sigmas).abs().max().item()
    return [f"another σ grid (max |Δσ| {delta:.3g}: another scheduler, shift, denoise or a fitted schedule)"]


def range_differences(entry, request):
    """How ``entry``'s steps and σ range differ from a fitted-schedule request."""
    first, last = entry.sigmas[0].item(), entry.sigmas[-1].item()
    diffs = [] if entry.steps == request.steps else [f"{entry.steps} steps, not {request.steps}"]
    if not same_sigma(first, request.sigma_max):
        diffs.append(f"first σ {first:.6g}, not {request.sigma_max:.6g}")
    if not same_sigma(last, request.sigma_last):
        diffs.append(f"last σ {last:.6g}, not {request.sigma_last:.6g}")
    return diffs


def place(where):
    """How a source is named in messages: a λ file by its file name."""
    return os.path.basename(where) if isinstance(where, str) and where.endswith(".safetensors") else where


def nearest(candidates, request):
    """``(entry, where, differences)`` with the fewest differences among ``(entry, where)`` pairs (first on ties), or
    None."""
    best = None
    for entry, where in candidates:
        diffs = differences(entry, request)
        if best is None or len(diffs) < len(best[2]):
            best = (entry, where, diffs)
    return best


def miss_message(request, near, where):
    """The one miss message: "no <request> in <where>: nearest entry: <entry> in <file>, which differs in <...>"."""
    if near is None:
        return f"no {request.describe()} in {where}: it is empty"
    entry, source, diffs = near
    return (f"no {request.describe()} in {where}: nearest entry: {entry.describe()} in {place(source)}, which "
            f"differs in {'; '.join(diffs)}")


def find(entries, request, source="the λ entries"):
    """The first of ``entries`` that serves ``request``, else LambdaNotFound naming the nearest one."""
    for entry in entries:
        if not differences(entry, request):
            return entry
    near = nearest(((e, source) for e in entries), request)
    raise LambdaNotFound(f"{miss_message(request, near, place(source))}. {request.hint}")


def find_lambdas(entries, sampler, sigmas, model=None, cfg=None, source="the λ entries"):
    """The entry for exactly this sampler, σ grid, model (one identity or several; None: any) and cfg."""
    return find(entries, Request.grid(sampler, sigmas, model, cfg), source)


def find_schedule(entries, sampler, steps, sigma_max, sigma_last=0.0, model=None, cfg=None, source="the λ entries"):
    """The fitted-schedule entry for this sampler, steps, σ range (relative SIGMA_RTOL), model and cfg."""
    return find(entries, Request.fitted(sampler, steps, sigma_max, sigma_last, model, cfg), source)
