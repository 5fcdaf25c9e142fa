"""The λ entry and its schema: fields, types and bounds (docs/format.md)."""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch

from .._version import __version__
from ..samplers import SAMPLER_NAMES, check_sigmas, nfe

FORMAT = "dode.lambdas"
FORMAT_VERSION = 1
SIGMA_RTOL = 1e-5  # grids that agree to float32 round-off are the same grid
SCHEDULES = ("given", "fitted")
OBJECTIVES = ("final", "greedy")  # how λ was fitted (lambdas/fit.py)
LAMBDA_BOUND = 1e4  # no real fit comes near it (docs/format.md)
SIGMA_BOUND = 1e5  # no model's σ_max comes near it (VE models reach about 1e3)
MAX_FILE_BYTES = 16 << 20  # a λ entry takes well under 1 kB; a bigger file is something else (a checkpoint?)


class LambdaFileError(ValueError):
    """A λ file that is not a valid dode λ file."""
    __module__ = "dode"  # its public name (dode.LambdaFileError): hosts print it without the pack's install path


@dataclass
class LambdaEntry:
    """One λ vector with the exact σ grid, sampler, model identity and CFG scale it was fitted for."""
    sampler: str
    sigmas: torch.Tensor
    lambdas: torch.Tensor
    model: str = ""
    aliases: list = field(default_factory=list)
    cfg: float | None = None
    teacher: str | None = None
    scale: int | None = None
    first_step: str = "none"
    schedule: str = "given"
    objective: str = "greedy"
    metrics: dict = field(default_factory=dict)
    created: str = ""
    dode_version: str = __version__

    def __post_init__(self):
        self.sigmas = as_vector("sigmas", self.sigmas)
        self.lambdas = as_vector("lambdas", self.lambdas)
        self.validate()
        self.cfg = None if self.cfg is None else float(self.cfg)
        self.aliases = list(self.aliases)
        self.metrics = dict(self.metrics)
        self.created = self.created or datetime.now(timezone.utc).isoformat(timespec="seconds")

    @property
    def ids(self):
        """Every model identity this entry serves: ``model`` and its aliases."""
        return {self.model, *self.aliases}

    @property
    def steps(self):
        return len(self.sigmas) - 1

    @property
    def sampling(self):
        """The host's model-sampling key the entry was fitted under (ComfyUI's ModelSampling: shift, multiplier, σ
        range), or None where the host recorded none."""
        return known_sampling(self.metrics.get("model_sampling"))

    @property
    def weights(self):
        """The host's key of the weights the entry was fitted on (ComfyUI: its base and patches), or None."""
        base, patches = self.metrics.get("model_base"), self.metrics.get("model_patches")
        return weights_key(base, patches) if isinstance(base, str) and isinstance(patches, str) else None

    def validate(self):
        """Raises ValueError naming the field unless every field has its schema type and sampler, σ and λ agree."""
        if not isinstance(self.sampler, str) or self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler {short(self.sampler)}; this dode knows {', '.join(SAMPLER_NAMES)}")
        check_sigmas(self.sigmas)
        if self.sigmas[0] > SIGMA_BOUND:
            raise ValueError(f"sigmas start at {self.sigmas[0]:.3g}, beyond the bound {SIGMA_BOUND:g} that no "
                             "model's σ_max comes near")
        expected = nfe(self.sampler, self.sigmas)
        if len(self.lambdas) != expected:
            raise ValueError(f"{self.sampler} on this {self.steps}-step grid needs {expected} λ values, "
                             f"the entry has {len(self.lambdas)}")
        if not torch.isfinite(self.lambdas).all():
            raise ValueError("lambdas contain NaN or infinity")
        if self.lambdas.abs().max() > LAMBDA_BOUND:
            raise ValueError(f"lambdas reach |λ| = {self.lambdas.abs().max():.3g}, beyond the bound {LAMBDA_BOUND:g} "
                             "that no real fit comes near; refit (dode.distill) or drop this entry")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {short(self.objective)}")
        for name, want, ok in FIELD_TYPES:
            if not ok(getattr(self, name)):
                raise ValueError(f"{name} must be {want}, got {short(getattr(self, name))}")

    def same_grid(self, sigmas):
        """True if ``sigmas`` is this entry's σ grid (up to float32 round-off, relative: a final 0 is never a final
        positive σ)."""
        sigmas = torch.as_tensor(sigmas).detach().double().cpu().flatten()
        return len(sigmas) == len(self.sigmas) and torch.allclose(sigmas, self.sigmas, rtol=SIGMA_RTOL, atol=0.0)

    def same_range(self, steps, sigma_max, sigma_last):
        """True if this entry has ``steps`` steps from ``sigma_max`` to ``sigma_last`` (relative tolerance, so a
        final 0 only matches 0)."""
        first, last = self.sigmas[0].item(), self.sigmas[-1].item()
        return self.steps == steps and same_sigma(first, sigma_max) and same_sigma(last, sigma_last)

    def same_target(self, other):
        """True if both entries are for the same model (a shared identity), sampler, CFG scale and schedule kind and
        the same σ grid (given) or σ range and steps (fitted): one replaces the other."""
        if (self.sampler, self.cfg, self.schedule) != (other.sampler, other.cfg, other.schedule) or \
                not self.ids & other.ids:
            return False
        if self.schedule == "fitted":
            return self.same_range(other.steps, other.sigmas[0].item(), other.sigmas[-1].item())
        return self.same_grid(other.sigmas)

    def describe(self):
        cfg = "no cfg" if self.cfg is None else f"cfg {self.cfg:g}"
        aka = f" (alias {', '.join(self.aliases)})" if self.aliases else ""
        fitted = ", fitted schedule" if self.schedule == "fitted" else ""
        shift = shift_of(self.sampling)
        shift = "" if shift is None else f", shift {shift}"
        return (f"{self.sampler}, {self.steps} steps, σ {self.sigmas[0]:.4g}→{self.sigmas[-1]:.4g}{fitted}, {cfg}"
                f"{shift}, model {self.model or '(unset)'}{aka}")

    def meta(self):
        return {"sampler": self.sampler, "steps": self.steps, "model": self.model, "aliases": self.aliases,
                "cfg": self.cfg, "teacher": self.teacher, "scale": self.scale, "first_step": self.first_step,
                "schedule": self.schedule, "objective": self.objective, "metrics": self.metrics,
                "created": self.created, "dode_version": self.dode_version}


def known_sampling(sampling):
    """A model-sampling key, or None for none or one the host could not tell ("" or "unknown")."""
    return sampling if isinstance(sampling, str) and sampling not in ("", "unknown") else None


def weights_key(base, patches):
    """The key of a model's weights alone, without its model sampling: ``<base>; <patches>``."""
    return f"{base}; {patches}"


def shift_of(sampling):
    """The ``shift=…`` value in a model-sampling key as text, else None."""
    found = re.search(r"\bshift=([^,)\s]+)", sampling or "")
    return found.group(1) if found else None


def as_vector(name, values):
    """``values`` (a tensor or a sequence of real numbers) as a float64 CPU vector, or a ValueError naming ``name``."""
    try:
        vector = torch.as_tensor(values).detach()
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise ValueError(f"{name} must be a 1-D tensor or list of numbers, got {short(values)}") from e
    if vector.ndim != 1 or vector.dtype == torch.bool or vector.is_complex():
        raise ValueError(f"{name} must be a 1-D tensor of real numbers, got {vector.dtype} with shape "
                         f"{tuple(vector.shape)}")
    return vector.double().cpu()


def is_real(value):
    """A real number, not a bool (JSON true must not pass as 1)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_real(value):
    try:
        return is_real(value) and math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def is_metric(value):
    return value is None or isinstance(value, str) or isinstance(value, bool) or is_real(value)


FIELD_TYPES = (  # (field, what it must be, check); sampler, sigmas and lambdas are checked in validate
    ("model", "a string", lambda v: isinstance(v, str)),
    ("aliases", "a list of non-empty strings",
     lambda v: isinstance(v, (list, tuple)) and all(isinstance(a, str) and a for a in v)),
    ("cfg", "a finite number or null", lambda v: v is None or is_finite_real(v)),
    ("teacher", "a string or null", lambda v: v is None or isinstance(v, str)),
    ("scale", "an integer ≥ 1 or null", lambda v: v is None or (isinstance(v, numbers.Integral) and
                                                                 not isinstance(v, bool) and v >= 1)),
    ("first_step", "a string", lambda v: isinstance(v, str)),
    ("schedule", f"one of {', '.join(SCHEDULES)}", lambda v: v in SCHEDULES),
    ("metrics", "an object of strings, numbers, booleans or nulls",
     lambda v: isinstance(v, dict) and all(isinstance(k, str) and is_metric(m) for k, m in v.items())),
    ("created", "a string", lambda v: isinstance(v, str)),
    ("dode_version", "a string", lambda v: isinstance(v, str)),
)


def short(value, limit=60):
    """A repr of ``value`` short enough for an error message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # a huge int or a deeply nested list
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def same_sigma(a, b):
    """True if noise levels ``a`` and ``b`` agree to float32 round-off (relative, so 0 only equals 0)."""
    return math.isclose(float(a), float(b), rel_tol=SIGMA_RTOL, abs_tol=0.0)


def as_entries(fit_or_entries, **meta):
    """A DistillResult, an entry or a list of them as a list of entries, with ``meta`` fields (model, cfg, ...) set."""
    items = fit_or_entries if isinstance(fit_or_entries, (list, tuple)) else [fit_or_entries]
    if not items:
        raise ValueError("nothing to save: pass a DistillResult, a LambdaEntry or a non-empty list of them")
    entries = []
    for item in items:
        if hasattr(item, "entry"):
            entries.append(item.entry(**meta))
        elif isinstance(item, LambdaEntry):
            fields = {**item.__dict__, **meta}
            entries.append(LambdaEntry(**fields))
        else:
            raise TypeError(f"cannot save {type(item).__name__}; pass a DistillResult or LambdaEntry")
    return entries
