"""The λ file: safetensors, written atomically, read through one open, validated against the schema."""
import json
import os
import re
import stat

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as serialize

from .._version import __version__
from .atomic import write_atomically, write_bytes
from .schema import FORMAT, FORMAT_VERSION, MAX_FILE_BYTES, LambdaEntry, LambdaFileError, as_entries, short

FILE_HINT = "λ files are written by dode.save_lambdas or the Distill λ node; delete or replace this one"


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
