"""A λ store: folders (and single files) of λ files, indexed once and re-read only when a file changes; and the
checkpoint identity every host can compute, the AutoV2 hash."""
import glob
import hashlib
import json
import logging
import os
import threading

from .files import (LambdaFileError, LambdaNotFound, as_entries, find_lambdas, find_schedule, load_lambdas,
                    save_lambdas, write_atomically)

SUFFIX = ".safetensors"
log = logging.getLogger("dode")
_hash_lock = threading.Lock()
_hash_memo = {}  # (realpath, size, mtime_ns) -> sha256 hex


def autov2(path, cache=None):
    """The checkpoint's AutoV2 hash (the WebUI's short hash: the first 10 hex digits of the file's sha256), the
    model identity shared by all hosts. The sha256 is memoised per (real path, size, mtime) in memory and, if
    ``cache`` names a JSON file, on disk (written atomically), so a file is read in full once per version."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    stamp = [stat.st_size, stat.st_mtime_ns]
    with _hash_lock:
        digest = _hash_memo.get((real, *stamp))
        if digest is None:
            digest = cached_sha256(real, stamp, cache)
            _hash_memo[(real, *stamp)] = digest
    return digest[:10]


def cached_sha256(real, stamp, cache):
    """The sha256 of ``real`` from the JSON ``cache`` ({real path: [size, mtime_ns, sha256]}) if the stamp agrees,
    else hashed (streamed) and written back."""
    disk = {}
    if cache:
        try:
            with open(cache, encoding="utf-8") as f:
                disk = json.load(f)
        except (OSError, ValueError):
            pass
    known = disk.get(real) if isinstance(disk, dict) else None
    if isinstance(known, list) and known[:2] == stamp and len(known) == 3:
        return known[2]
    log.info("[dode] hashing %s (%.2f GB) for its AutoV2; once per file version", real, stamp[0] / 1e9)
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if cache:
        disk = disk if isinstance(disk, dict) else {}
        disk[real] = stamp + [digest]
        try:
            write_atomically(cache, lambda tmp: write_json(tmp, disk))
        except OSError as e:
            log.warning("[dode] could not write the hash cache %s: %s", cache, e)
    return digest


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)


class LambdaStore:
    """Looks up λ entries by (model, sampler, σ grid, cfg) across ``folders`` and extra ``files``.

    Folders need not exist yet. Unreadable files are skipped and reported in ``problems`` (never raised), so a bad
    file next to a checkpoint can't break a host."""

    def __init__(self, folders=(), files=()):
        self.folders = [os.fspath(f) for f in folders]
        self.files = [os.fspath(f) for f in files]
        self.cache = {}
        self.problems = {}

    def paths(self):
        found = [p for folder in self.folders for p in sorted(glob.glob(os.path.join(folder, "*" + SUFFIX)))]
        return found + [p for p in self.files if os.path.isfile(p)]

    def entries(self, path):
        """The entries of ``path``, read again only when its size or mtime changed."""
        stat = os.stat(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self.cache.get(path)
        if cached is None or cached[0] != stamp:
            try:
                cached = (stamp, load_lambdas(path))
                self.problems.pop(path, None)
            except LambdaFileError as e:
                cached = (stamp, [])
                self.problems[path] = str(e)
            self.cache[path] = cached
        return cached[1]

    def lookup(self, model, sampler, sigmas, cfg=None):
        """``(entry, path)`` for the first file with a matching entry, else ``(None, reason)``. ``model``: one
        identity or a sequence of acceptable ones (see find_lambdas)."""
        return self.first_match(lambda entries, path: find_lambdas(entries, sampler, sigmas, model=model, cfg=cfg,
                                                                   source=path))

    def lookup_schedule(self, model, sampler, steps, sigma_max, sigma_last=0.0, cfg=None):
        """``(entry, path)`` for the first file with a fitted schedule for this setting (see find_schedule), else
        ``(None, reason)``; the entry's ``sigmas`` are the grid to sample with."""
        return self.first_match(lambda entries, path: find_schedule(entries, sampler, steps, sigma_max, sigma_last,
                                                                    model=model, cfg=cfg, source=path))

    def first_match(self, find):
        """``(entry, path)`` for the first file where ``find(entries, path)`` returns an entry, else
        ``(None, reason)`` with its LambdaNotFound message (or a count when several files missed)."""
        reasons = []
        for path in self.paths():
            entries = self.entries(path)
            if not entries:
                continue
            try:
                return find(entries, path), path
            except LambdaNotFound as e:
                reasons.append(str(e))
        where = ", ".join(self.folders + self.files) or "no folders"
        if not reasons:
            return None, f"no λ files in {where}"
        return None, reasons[0] if len(reasons) == 1 else f"no match in {len(reasons)} λ files in {where}"

    def add(self, path, fit_or_entry, **meta):
        """Merges entries into the λ file ``path`` (replacing any for the same target, i.e. sharing a model identity
        and the sampler, σ grid and cfg), atomically."""
        new = as_entries(fit_or_entry, **meta)
        old = load_lambdas(path) if os.path.exists(path) else []
        kept = [e for e in old if not any(e.same_target(n) for n in new)]
        save_lambdas(path, kept + new)
        self.cache.pop(os.fspath(path), None)
        return path
