"""A λ store: folders (and single files) of λ files, indexed once and re-read only when a file changes; and the
checkpoint identity every host can compute, the AutoV2 hash."""
import hashlib
import json
import logging
import os
import threading

from filelock import FileLock, Timeout

from .files import (LambdaFileError, LambdaNotFound, as_entries, clean_stale_temps, find_lambdas, find_schedule,
                    load_lambdas, prepare_folder, save_lambdas, write_atomically)

SUFFIX = ".safetensors"
LOCK_TIMEOUT = 60  # seconds; a merge holds the lock for milliseconds
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

    Folders need not exist yet. A file that can't be used (not a valid λ file, a broken or looping symbolic link, a
    folder, unreadable) is skipped with a warning that names it, and listed in ``skipped`` (``problems``: the same
    as a dict), never raised: a bad file from a stranger can't break a host or hide the other files. ``add`` merges
    under a cross-process lock, so two hosts sharing a folder lose no entries."""

    def __init__(self, folders=(), files=()):
        self.folders = [os.fspath(f) for f in folders]
        self.files = [os.fspath(f) for f in files]
        self.cache = {}     # path -> (stamp, entries)
        self.problems = {}  # path -> why it is skipped

    @property
    def skipped(self):
        """``[(path, reason), ...]`` for the files skipped so far that are still there (for a host's UI)."""
        return sorted(self.problems.items())

    def paths(self):
        """The λ files of the folders (sorted by name) and the extra files that exist. Listing a folder also deletes
        the temp files that killed writers left in it."""
        found = [p for folder in self.folders for p in self.folder_files(folder)]
        for path in [p for p in self.problems if not os.path.lexists(p)]:
            del self.problems[path]
        return found + [p for p in self.files if os.path.isfile(p)]

    def folder_files(self, folder):
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        except OSError as e:
            self.skip(folder, None, f"{folder}: cannot list this λ folder ({e.strerror or e})")
            return []
        clean_stale_temps(folder, names)
        return [os.path.join(folder, n) for n in sorted(names) if n.endswith(SUFFIX) and not n.startswith(".")]

    def entries(self, path):
        """The entries of ``path`` (none if it is skipped), read again only when the file changed."""
        path = os.fspath(path)
        try:
            stat = os.stat(path)
        except OSError as e:  # a broken symbolic link, a link loop, no permission
            return self.skip(path, None, f"{path}: cannot read it ({e.strerror or e}); if it is a symbolic link, fix "
                                         "or remove it")
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self.cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            entries = load_lambdas(path)
        except LambdaFileError as e:
            return self.skip(path, stamp, str(e))
        except Exception as e:  # whatever a file can make the loader do, the other files must keep working
            return self.skip(path, stamp, f"{path}: could not be read ({type(e).__name__}: {e})")
        self.problems.pop(path, None)
        self.cache[path] = (stamp, entries)
        return entries

    def skip(self, path, stamp, reason):
        """Records that ``path`` is skipped (warning once per reason) and returns its (no) entries."""
        if self.problems.get(path) != reason:
            log.warning("[dode] skipping %s", reason)
        self.problems[path] = reason
        self.cache[path] = (stamp, [])
        return []

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
            skipped = f" ({len(self.problems)} skipped: see LambdaStore.skipped or the log)" if self.problems else ""
            return None, f"no λ files in {where}{skipped}"
        return None, reasons[0] if len(reasons) == 1 else f"no match in {len(reasons)} λ files in {where}"

    def add(self, path, fit_or_entry, **meta):
        """Merges entries into the λ file ``path`` (replacing any for the same target: sharing a model identity and
        the sampler, cfg and σ grid or fitted range), atomically, holding the lock ``<path>.lock`` from read to
        write so that concurrent adds (other threads, processes, hosts on the same folder) lose nothing."""
        new = as_entries(fit_or_entry, **meta)
        path = os.fspath(path)
        with file_lock(path):
            try:
                old = load_lambdas(path) if os.path.lexists(path) else []
            except LambdaFileError as e:
                raise LambdaFileError(f"{e}. Not adding to it, so that nothing in it is lost: move it away or save "
                                      "to another file") from e
            kept = [e for e in old if not any(e.same_target(n) for n in new)]
            save_lambdas(path, kept + new)
        self.cache.pop(path, None)
        return path


def file_lock(path):
    """The cross-process lock ``<path>.lock`` (filelock: flock on posix, msvcrt on Windows; released if its holder
    dies), after ``path``'s folder exists."""
    prepare_folder(path)
    return ExplainedLock(path + ".lock", timeout=LOCK_TIMEOUT)


class ExplainedLock(FileLock):
    """A FileLock whose failures say what to do."""

    def acquire(self, *args, **kwargs):
        try:
            return super().acquire(*args, **kwargs)
        except Timeout as e:
            raise TimeoutError(f"{self.lock_file}: another process held this lock for {self.timeout:g} s; if no "
                               "dode is saving λ right now, delete the lock file") from e
        except PermissionError as e:
            raise PermissionError(f"cannot lock {self.lock_file}: its folder is read-only; choose a writable "
                                  "folder or fix its permissions") from e
