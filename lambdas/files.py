"""The λ file: safetensors only, written atomically, validated on load. This module owns the schema.

A file holds one or more entries. Entry ``k`` stores two float64 tensors, ``"{k}.lambdas"`` (one λ per network
evaluation) and ``"{k}.sigmas"`` (the exact σ grid it was fitted on), and its metadata as JSON in the safetensors
header: ``{"format": "dode.lambdas", "format_version": "1", "dode_version": ..., "entries": "[{...}, ...]"}``.
λ follows the paper's convention, D~ = D + λ (D − D_prev), and is valid only for the model, sampler, σ grid and CFG
scale it was fitted on, so lookups compare all four and never return an entry that differs in any of them.

An entry names its model by ``model`` (the identity of the host that fitted it) and, optionally, by ``aliases``:
further identities of exactly the same model, e.g. the checkpoint's AutoV2 hash next to a ComfyUI fingerprint, so that
another host finds it. A lookup passes every identity it accepts and matches if any equals ``model`` or an alias.
Files without ``aliases`` (older dode) load with none; older dode ignores the field.

``schedule`` says what the stored σ grid is: ``"given"`` (the grid the user sampled with; the entry serves exactly
that grid) or ``"fitted"`` (a grid the fit chose; ``find_schedule`` finds it by model, sampler, steps, cfg and σ range,
and ``find_lambdas`` finds it by its stored grid, so a sampler fed the fitted grid gets its λ). ``objective`` says what
λ was fitted to: ``"greedy"`` (step by step, the paper's) or ``"final"`` (the teacher's final sample). Files from older
dode have neither field and load as given/greedy.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .._version import __version__
from ..samplers import SAMPLER_NAMES, check_sigmas, nfe

FORMAT = "dode.lambdas"
FORMAT_VERSION = 1
SIGMA_RTOL = 1e-5  # grids that agree to float32 round-off are the same grid
SCHEDULES = ("given", "fitted")
OBJECTIVES = ("greedy", "final")


class LambdaFileError(ValueError):
    """A λ file that is not a valid dode λ file."""


class LambdaNotFound(LookupError):
    """No λ entry matches the requested model, sampler, σ grid and CFG scale."""


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
        self.sigmas = torch.as_tensor(self.sigmas).detach().double().cpu().flatten()
        self.lambdas = torch.as_tensor(self.lambdas).detach().double().cpu().flatten()
        self.cfg = None if self.cfg is None else float(self.cfg)
        if not isinstance(self.aliases, (list, tuple)) or not all(isinstance(a, str) and a for a in self.aliases):
            raise ValueError(f"aliases must be a list of non-empty strings, got {self.aliases!r}")
        self.aliases = list(self.aliases)
        self.created = self.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.validate()

    @property
    def ids(self):
        """Every model identity this entry serves: ``model`` and its aliases."""
        return {self.model, *self.aliases}

    @property
    def steps(self):
        return len(self.sigmas) - 1

    def validate(self):
        """Raises ValueError unless sampler, σ grid and λ length agree."""
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler {self.sampler!r}; this dode knows {', '.join(SAMPLER_NAMES)}")
        check_sigmas(self.sigmas)
        expected = nfe(self.sampler, self.sigmas)
        if len(self.lambdas) != expected:
            raise ValueError(f"{self.sampler} on this {self.steps}-step grid needs {expected} λ values, "
                             f"the entry has {len(self.lambdas)}")
        if not torch.isfinite(self.lambdas).all():
            raise ValueError("λ contains NaN or infinity")
        if self.cfg is not None and not math.isfinite(self.cfg):
            raise ValueError(f"cfg must be finite, got {self.cfg}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")

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
        return (f"{self.sampler}, {self.steps} steps, σ {self.sigmas[0]:.4g}→{self.sigmas[-1]:.4g}{fitted}, {cfg}, "
                f"model {self.model or '(unset)'}{aka}")

    def meta(self):
        return {"sampler": self.sampler, "steps": self.steps, "model": self.model, "aliases": self.aliases,
                "cfg": self.cfg, "teacher": self.teacher, "scale": self.scale, "first_step": self.first_step,
                "schedule": self.schedule, "objective": self.objective, "metrics": self.metrics,
                "created": self.created, "dode_version": self.dode_version}


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


def save_lambdas(path, fit_or_entries, **meta):
    """Writes entries to ``path`` as a λ file, atomically (temp file in the same folder, then os.replace)."""
    entries = as_entries(fit_or_entries, **meta)
    tensors = {}
    for k, entry in enumerate(entries):
        tensors[f"{k}.lambdas"] = entry.lambdas.contiguous()
        tensors[f"{k}.sigmas"] = entry.sigmas.contiguous()
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "dode_version": __version__,
              "entries": json.dumps([e.meta() for e in entries])}
    return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def write_atomically(path, write):
    """Runs ``write(tmp)`` on a temp file in ``path``'s folder, gives it the usual permissions, then os.replace:
    readers see the old file or the new one, never a partial one, and a failed write leaves no temp file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".dode-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def current_umask():
    """The process umask (read by setting and restoring it), so λ files get the usual permissions, not mkstemp's 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_header(path):
    """The safetensors metadata and tensors of ``path``, or a LambdaFileError saying what is wrong."""
    if not os.path.isfile(path):
        raise LambdaFileError(f"{path}: no such λ file")
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise LambdaFileError(f"{path}: not a readable safetensors file ({e}); λ files are written by "
                              "dode.save_lambdas or the Distill λ node") from e


def load_lambdas(path):
    """Reads and validates a λ file; returns its entries."""
    header, tensors = read_header(path)
    if header.get("format") != FORMAT:
        raise LambdaFileError(f"{path}: not a dode λ file (format {header.get('format')!r}, expected {FORMAT!r})")
    version = header.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise LambdaFileError(f"{path}: λ file format version {version!r} is newer than this dode supports "
                              f"({FORMAT_VERSION}); update dode")
    try:
        metas = json.loads(header["entries"])
    except (KeyError, json.JSONDecodeError) as e:
        raise LambdaFileError(f"{path}: the entry list in the header is missing or not JSON ({e})") from e
    if not isinstance(metas, list) or not metas:
        raise LambdaFileError(f"{path}: the file holds no λ entries")
    return [parse_entry(path, k, meta, tensors) for k, meta in enumerate(metas)]


def parse_entry(path, k, meta, tensors):
    names = (f"{k}.lambdas", f"{k}.sigmas")
    missing = [n for n in names if n not in tensors]
    if missing or not isinstance(meta, dict):
        raise LambdaFileError(f"{path}: entry {k} is incomplete (missing {', '.join(missing) or 'metadata'})")
    fields = {key: meta.get(key) for key in ("model", "aliases", "cfg", "teacher", "scale", "first_step", "schedule",
                                             "objective", "metrics", "created", "dode_version") if meta.get(key) is not None}
    try:
        entry = LambdaEntry(sampler=meta.get("sampler"), lambdas=tensors[names[0]], sigmas=tensors[names[1]], **fields)
    except (TypeError, ValueError) as e:
        raise LambdaFileError(f"{path}: entry {k} is invalid: {e}") from e
    if meta.get("steps") not in (None, entry.steps):
        raise LambdaFileError(f"{path}: entry {k} says {meta['steps']} steps but its σ grid has {entry.steps}")
    return entry


def find_lambdas(entries, sampler, sigmas, model=None, cfg=None, source="the λ entries"):
    """The entry fitted for exactly this sampler, σ grid, model and CFG scale, else LambdaNotFound.

    ``model`` is one identity or a sequence of acceptable ones (an entry matches if its ``model`` or an alias is among
    them); ``None`` accepts any. ``cfg`` must equal the entry's (both None for an unguided fit)."""
    cfg = None if cfg is None else float(cfg)
    models = None if model is None else {model} if isinstance(model, str) else set(model)
    misses = []
    for k, entry in enumerate(entries):
        why = mismatch(entry, sampler, sigmas, models, cfg)
        if why is None:
            return entry
        misses.append(f"entry {k} ({entry.describe()}): {why}")
    want = (f"{sampler}, {len(sigmas) - 1} steps, σ {float(sigmas[0]):.4g}→{float(sigmas[-1]):.4g}, "
            f"{'no cfg' if cfg is None else f'cfg {cfg:g}'}" +
            ("" if models is None else f", model {' or '.join(sorted(models))}"))
    near = "; ".join(misses) if misses else "it is empty"
    raise LambdaNotFound(f"no λ for {want} in {source}: {near}. λ is only valid for the exact model, sampler, σ grid "
                         "and CFG scale it was fitted on; distill λ for this setting (dode.distill or the Distill λ "
                         "node)")


def mismatch(entry, sampler, sigmas, models, cfg):
    """Why ``entry`` does not serve the request (``models``: the accepted identities, None for any), or None."""
    if entry.sampler != sampler:
        return f"sampler {entry.sampler}"
    if models is not None and not models & entry.ids:
        return f"another model ({entry.model or 'unset'})"
    if len(sigmas) - 1 != entry.steps:
        return f"{entry.steps} steps, not {len(sigmas) - 1}"
    if not entry.same_grid(sigmas):
        diff = (torch.as_tensor(sigmas).double().cpu() - entry.sigmas).abs().max().item()
        return f"another σ grid (max |Δσ| {diff:.3g}: another scheduler, shift or denoise)"
    if entry.cfg != cfg:
        return f"cfg {entry.cfg}, not {cfg}"
    return None


def find_schedule(entries, sampler, steps, sigma_max, sigma_last=0.0, model=None, cfg=None, source="the λ entries"):
    """The entry with a fitted schedule for this sampler, number of steps, σ range, model and CFG scale, else
    LambdaNotFound naming the nearest entry and what differs.

    The entry's stored σ's are the grid to sample with. Its first σ must equal ``sigma_max`` and its last
    ``sigma_last`` (relative tolerance SIGMA_RTOL: a final 0 only matches 0); ``model`` and ``cfg`` as in
    find_lambdas."""
    cfg = None if cfg is None else float(cfg)
    models = None if model is None else {model} if isinstance(model, str) else set(model)
    nearest = None
    for k, entry in enumerate(entries):
        diffs = schedule_mismatches(entry, sampler, steps, sigma_max, sigma_last, models, cfg)
        if not diffs:
            return entry
        if nearest is None or len(diffs) < len(nearest[2]):
            nearest = (k, entry, diffs)
    want = (f"a fitted {steps}-step {sampler} schedule, σ {float(sigma_max):.4g}→{float(sigma_last):.4g}, "
            f"{'no cfg' if cfg is None else f'cfg {cfg:g}'}" +
            ("" if models is None else f", model {' or '.join(sorted(models))}"))
    near = "it is empty" if nearest is None else \
        f"nearest is entry {nearest[0]} ({nearest[1].describe()}), which differs in {'; '.join(nearest[2])}"
    raise LambdaNotFound(f"no {want} in {source}: {near}. A fitted schedule is only valid for the exact model, "
                         "sampler, number of steps, σ range and CFG scale it was fitted for; distill one for this "
                         "setting (dode.distill(..., schedule=True) or the Distill λ node)")


def schedule_mismatches(entry, sampler, steps, sigma_max, sigma_last, models, cfg):
    """What differs between ``entry`` and a request for a fitted schedule (an empty list if it serves it)."""
    diffs = []
    if entry.schedule != "fitted":
        diffs.append("schedule: it holds λ for a given grid, not a fitted schedule")
    if entry.sampler != sampler:
        diffs.append(f"sampler {entry.sampler}, not {sampler}")
    if models is not None and not models & entry.ids:
        diffs.append(f"model ({entry.model or 'unset'})")
    if entry.steps != steps:
        diffs.append(f"{entry.steps} steps, not {steps}")
    if not same_sigma(entry.sigmas[0].item(), sigma_max):
        diffs.append(f"first σ {entry.sigmas[0].item():.6g}, not {float(sigma_max):.6g}")
    if not same_sigma(entry.sigmas[-1].item(), sigma_last):
        diffs.append(f"last σ {entry.sigmas[-1].item():.6g}, not {float(sigma_last):.6g}")
    if entry.cfg != cfg:
        diffs.append(f"cfg {entry.cfg}, not {cfg}")
    return diffs
