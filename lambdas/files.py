"""The λ file: safetensors only, written atomically, read through one open, validated strictly. This module owns the
schema.

A file holds one or more entries. Entry ``k`` stores two tensors, ``"{k}.lambdas"`` (one λ per network evaluation)
and ``"{k}.sigmas"`` (the exact σ grid it was fitted on), and its metadata as JSON in the safetensors header:
``{"format": "dode.lambdas", "format_version": "1", "dode_version": ..., "entries": "[{...}, ...]"}``.
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

The schema. λ files come from strangers, so everything else is refused with one LambdaFileError that names the file,
the entry and the field:

- the file: a regular file of at most MAX_FILE_BYTES, a valid safetensors container; its header metadata has
  ``format`` = "dode.lambdas", ``format_version`` = "1" exactly (a larger ASCII number is a newer dode, anything else
  is not a version), and ``entries``, a JSON list of at least one object;
- the tensors: exactly ``"{k}.lambdas"`` and ``"{k}.sigmas"`` for every entry k, each float64 and 1-D. σ: steps + 1
  values (steps ≥ 1), finite, strictly decreasing, positive except an optional final 0, and at most SIGMA_BOUND = 1e5
  (σ_max is about 1 for flow models, 14.6 for SD, 80 for EDM, about 1e3 for the largest VE models). λ: as many values
  as the sampler evaluates the network on that grid (``nfe``), finite, with |λ| ≤ LAMBDA_BOUND = 1e4. Fitted λ are
  mostly of order 1; the largest we measured is 226 (the greedy fit of a Heun predictor, whose λ barely moves the
  sample, on the test GMM at 5 steps), so 1e4 leaves a wide margin, and a larger value is damage or an attack (a λ of
  1e300 turns the sample into inf/NaN);
- an entry's metadata: ``sampler`` (a dode sampler name, required), ``steps`` (an integer equal to the grid's, may be
  absent), ``model`` (string), ``aliases`` (list of non-empty strings), ``cfg`` (finite number or null), ``teacher``
  (string or null), ``scale`` (integer ≥ 1 or null), ``first_step`` (string), ``schedule`` ("given" | "fitted"),
  ``objective`` ("greedy" | "final"), ``metrics`` (object whose values are strings, numbers, booleans or null),
  ``created`` and ``dode_version`` (strings). An absent or null field takes its default; an unknown field is ignored
  (a newer dode of the same format version may add one, as ``aliases`` was added). Booleans are not numbers here.

Writes go to a temp file ``.dode-<pid>@<host>.<random>.tmp`` in the destination's folder, then ``os.replace``: a
reader sees the old file or the new one. A temp file left by a killed writer is deleted by the next write into that
folder or the next LambdaStore scan of it (when its writer's process is gone, or after STALE_TEMP_SECONDS).
"""
from __future__ import annotations

import errno
import json
import math
import numbers
import os
import re
import secrets
import socket
import stat
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as serialize

from .._version import __version__
from ..samplers import SAMPLER_NAMES, check_sigmas, nfe

FORMAT = "dode.lambdas"
FORMAT_VERSION = 1
SIGMA_RTOL = 1e-5  # grids that agree to float32 round-off are the same grid
SCHEDULES = ("given", "fitted")
OBJECTIVES = ("greedy", "final")
LAMBDA_BOUND = 1e4  # no real fit comes near it; see the module docstring
SIGMA_BOUND = 1e5  # no model's σ_max comes near it (VE models reach about 1e3); see the module docstring
MAX_FILE_BYTES = 16 << 20  # a λ entry takes well under 1 kB; a bigger file is something else (a checkpoint?)
STALE_TEMP_SECONDS = 3600  # a temp file of ours this old belongs to a writer that will never finish
TEMP_NAME = re.compile(r"\.dode-(?:(\d{1,10})@([A-Za-z0-9]*)\.)?[^/\\]*\.tmp\Z")  # older dode: .dode-<random>.tmp
FILE_HINT = "λ files are written by dode.save_lambdas or the Distill λ node; delete or replace this one"


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

    def validate(self):
        """Raises ValueError, naming the field, unless every field has its schema type (module docstring) and
        sampler, σ grid and λ agree."""
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
        return (f"{self.sampler}, {self.steps} steps, σ {self.sigmas[0]:.4g}→{self.sigmas[-1]:.4g}{fitted}, {cfg}, "
                f"model {self.model or '(unset)'}{aka}")

    def meta(self):
        return {"sampler": self.sampler, "steps": self.steps, "model": self.model, "aliases": self.aliases,
                "cfg": self.cfg, "teacher": self.teacher, "scale": self.scale, "first_step": self.first_step,
                "schedule": self.schedule, "objective": self.objective, "metrics": self.metrics,
                "created": self.created, "dode_version": self.dode_version}


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
    ("objective", f"one of {', '.join(OBJECTIVES)}", lambda v: v in OBJECTIVES),
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


def save_lambdas(path, fit_or_entries, **meta):
    """Writes entries to ``path`` as a λ file, atomically (temp file in the same folder, then os.replace)."""
    entries = as_entries(fit_or_entries, **meta)
    tensors = {}
    for k, entry in enumerate(entries):
        tensors[f"{k}.lambdas"] = entry.lambdas.contiguous()
        tensors[f"{k}.sigmas"] = entry.sigmas.contiguous()
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "dode_version": __version__,
              "entries": json.dumps([e.meta() for e in entries])}
    data = serialize(tensors, metadata=header)
    return write_atomically(path, lambda tmp: write_bytes(tmp, data))


def write_bytes(path, data):
    """Writes ``data`` into the existing file ``path`` (keeping its mode) and flushes it to disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomically(path, write):
    """Runs ``write(tmp)`` on a new temp file in ``path``'s folder, then os.replace: readers see the old file or the
    new one, never a partial one, and a failed write leaves no temp file. The temp file is created with mode 0666, so
    the process umask (and the folder's default ACL) gives it the usual permissions without the umask being changed
    (which would race with other threads). Stale temp files of killed writers in that folder are deleted first."""
    folder = prepare_folder(path)
    clean_stale_temps(folder)
    tmp = create_temp(folder, path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def prepare_folder(path):
    """Creates ``path``'s folder if needed and returns it, or an OSError that names the real obstacle."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise NotADirectoryError(f"cannot save {path}: {blocking_file(folder)} is a file, not a folder; choose a "
                                 "path inside a folder or move that file away") from e
    except PermissionError as e:
        raise PermissionError(f"cannot save {path}: no permission to create the folder {folder}; create it or "
                              "choose a writable folder") from e
    if not os.access(folder, os.W_OK):
        raise read_only(path, folder)
    return folder


def read_only(path, folder):
    return PermissionError(f"cannot save {path}: the folder {folder} is read-only; choose a writable folder or fix "
                           "its permissions")


def blocking_file(folder):
    """The nearest of ``folder`` and its parents that exists but is not a folder."""
    while not os.path.isdir(folder) and not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def create_temp(folder, path):
    """A new empty temp file of ours in ``folder`` (mode 0666 less the umask), named for its writer (see TEMP_NAME)."""
    tmp = os.path.join(folder, f".dode-{os.getpid()}@{this_host()}.{secrets.token_hex(6)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
    except OSError as e:
        if isinstance(e, PermissionError) or e.errno == errno.EROFS:
            raise read_only(path, folder) from e
        raise
    return tmp


def this_host():
    """This machine's name as it appears in our temp file names (letters and digits only)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def clean_stale_temps(folder, names=None):
    """Deletes the temp files of ours in ``folder`` (``names``: its listing, if at hand) that no writer will finish:
    made on this host by a process that is gone (kill -9 during a save), or older than STALE_TEMP_SECONDS."""
    if names is None:
        try:
            names = os.listdir(folder)
        except OSError:
            return
    for name in names:
        match = TEMP_NAME.match(name)
        tmp = os.path.join(folder, name)
        if match and temp_is_stale(tmp, *match.groups()):
            with suppress(OSError):
                os.unlink(tmp)


def temp_is_stale(tmp, pid, host):
    try:
        age = time.time() - os.lstat(tmp).st_mtime
    except OSError:
        return False
    return age > STALE_TEMP_SECONDS or (pid is not None and host == this_host() and not process_alive(int(pid)))


def process_alive(pid):
    """False only if no process ``pid`` exists on this host (posix; elsewhere every writer counts as alive)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; not a pid this system can have
        return False
    except PermissionError:  # another user's process
        pass
    return True


def read_bytes(path):
    """The bytes of the λ file ``path``, read through one open (a concurrent os.replace can't mix two versions)."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        broken = " (a symbolic link to a missing file)" if os.path.islink(path) else ""
        raise LambdaFileError(f"{path}: no such λ file{broken}") from e
    except OSError as e:
        raise LambdaFileError(f"{path}: cannot open the λ file ({e.strerror or e}); fix its permissions or, if "
                              "it is a symbolic link, its target") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LambdaFileError(f"{path}: not a regular file (a folder, pipe or device); a λ file is a "
                                  ".safetensors file")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise LambdaFileError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB, which no λ file is (a checkpoint "
                              "in the λ folder?); move it out of the λ folder")
    return data


def read_container(path, data):
    """The safetensors header metadata and the tensors of ``data``, or a LambdaFileError."""
    try:
        tensors = load_safetensors(data)
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + size].decode("utf-8"))
    except Exception as e:  # bytes from a stranger: any failure of the parser means "not a safetensors file"
        raise LambdaFileError(f"{path}: not a readable safetensors file ({type(e).__name__}: {short(str(e), 200)}); "
                              f"{FILE_HINT}") from e
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return (metadata if isinstance(metadata, dict) else {}), tensors


def load_lambdas(path):
    """Reads a λ file (one open) and validates it against the schema (module docstring); returns its entries.
    Anything else raises LambdaFileError naming the file, the entry and the field."""
    path = os.fspath(path)
    metadata, tensors = read_container(path, read_bytes(path))
    check_format(path, metadata)
    metas = read_entry_list(path, metadata)
    expected = {f"{k}.{part}" for k in range(len(metas)) for part in ("lambdas", "sigmas")}
    stray = sorted(set(tensors) - expected)
    if stray:
        raise LambdaFileError(f"{path}: tensor {short(stray[0])} belongs to none of the {len(metas)} entries; "
                              f"{FILE_HINT}")
    return [parse_entry(path, k, meta, tensors) for k, meta in enumerate(metas)]


def check_format(path, metadata):
    if metadata.get("format") != FORMAT:
        raise LambdaFileError(f"{path}: not a dode λ file (format {short(metadata.get('format'))}, expected "
                              f"{FORMAT!r}); {FILE_HINT}")
    version = metadata.get("format_version")
    if version is None:
        raise LambdaFileError(f"{path}: the header has no format_version (every dode λ file has "
                              f"{str(FORMAT_VERSION)!r}); the file is damaged or was not written by dode")
    if version == str(FORMAT_VERSION):
        return
    if isinstance(version, str) and re.fullmatch(r"[1-9][0-9]*", version):
        raise LambdaFileError(f"{path}: λ file format version {short(version)} is newer than this dode supports "
                              f"({FORMAT_VERSION}); update dode")
    raise LambdaFileError(f"{path}: format_version {short(version)} is not a λ file version (this dode reads "
                          f"{str(FORMAT_VERSION)!r}); the file is damaged or was not written by dode")


def read_entry_list(path, metadata):
    try:
        metas = json.loads(metadata["entries"])
    except KeyError as e:
        raise LambdaFileError(f"{path}: the header has no entry list; {FILE_HINT}") from e
    except (TypeError, ValueError, RecursionError) as e:  # not JSON, a huge integer, nested too deeply
        raise LambdaFileError(f"{path}: the entry list in the header is not JSON dode can read "
                              f"({type(e).__name__}: {short(str(e), 120)}); {FILE_HINT}") from e
    if not isinstance(metas, list) or not metas:
        raise LambdaFileError(f"{path}: the file holds no λ entries (the header's entry list is "
                              f"{short(metas)}); {FILE_HINT}")
    return metas


ENTRY_FIELDS = ("model", "aliases", "cfg", "teacher", "scale", "first_step", "schedule", "objective", "metrics",
                "created", "dode_version")


def parse_entry(path, k, meta, tensors):
    """Entry ``k`` of ``path``: its metadata object and its two tensors, checked against the schema."""
    if not isinstance(meta, dict):
        raise LambdaFileError(f"{path}: entry {k}: the metadata must be an object, got {short(meta)}")
    names = (f"{k}.lambdas", f"{k}.sigmas")
    missing = [n for n in names if n not in tensors]
    if missing:
        raise LambdaFileError(f"{path}: entry {k} is incomplete (missing {', '.join(missing)})")
    for name in names:
        tensor = tensors[name]
        if tensor.dtype != torch.float64 or tensor.ndim != 1:
            raise LambdaFileError(f"{path}: entry {k}: tensor {name} must be float64 and 1-D, got {tensor.dtype} "
                                  f"with shape {tuple(tensor.shape)}")
    fields = {key: meta[key] for key in ENTRY_FIELDS if meta.get(key) is not None}
    try:
        entry = LambdaEntry(sampler=meta.get("sampler"), lambdas=tensors[names[0]], sigmas=tensors[names[1]], **fields)
    except (TypeError, ValueError, OverflowError) as e:
        raise LambdaFileError(f"{path}: entry {k} is invalid: {e}") from e
    steps = meta.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps != entry.steps):
        raise LambdaFileError(f"{path}: entry {k}: steps says {short(steps)} but its σ grid has {entry.steps} steps")
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
    want = (f"fitted {steps}-step {sampler} schedule, σ {float(sigma_max):.4g}→{float(sigma_last):.4g}, "
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
