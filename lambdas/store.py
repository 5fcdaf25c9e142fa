"""A λ store: folders (and single files) of λ files, indexed once and re-read only when a file changes."""
import logging
import os
from contextlib import suppress

from filelock import FileLock, Timeout

from .atomic import clean_stale_temps, prepare_folder
from .files import load_lambdas, save_lambdas
from .match import Request
from .resolve import resolve, store_source
from .schema import LambdaFileError, as_entries

SUFFIX = ".safetensors"
LOCK_NAME = ".dode.lock"  # one lock file per λ folder (hidden; never listed as a λ file)
LOCK_TIMEOUT = 60  # seconds; a merge holds the lock for milliseconds
log = logging.getLogger("dode")


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
        """``(entry, path)`` for the first matching entry, else ``(None, reason)``; ``model``: one or more ids."""
        return self.first_match(Request.grid(sampler, sigmas, model, cfg))

    def lookup_schedule(self, model, sampler, steps, sigma_max, sigma_last=0.0, cfg=None):
        """``(entry, path)`` for the first fitted schedule for this setting, else ``(None, reason)``."""
        return self.first_match(Request.fitted(sampler, steps, sigma_max, sigma_last, model, cfg))

    def first_match(self, request):
        """``(entry, path)`` for the first entry serving ``request`` (match.Request), else ``(None, reason)``."""
        found = resolve(request, [store_source(self)])
        return (found.entry, found.where) if found.entry is not None else (None, found.reason)

    def add(self, path, fit_or_entry, **meta):
        """Merges entries into the λ file ``path`` (replacing any for the same target: sharing a model identity and
        the sampler, cfg and σ grid or fitted range), atomically, holding the folder's lock (``LOCK_NAME``) from
        read to write so that concurrent adds (other threads, processes, hosts on the same folder) lose nothing."""
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

    def remove(self, path, drop):
        """Removes the entries of the λ file ``path`` for which ``drop(entry)`` is true, under the folder's lock: the
        rest are written back atomically (readers see the old file or the new one), and a file left with no entry
        is deleted. A file that does not load is left as it is (LambdaFileError). Returns the removed entries."""
        path = os.fspath(path)
        with file_lock(path):
            entries = load_lambdas(path)
            gone = [e for e in entries if drop(e)]
            if gone:
                kept = [e for e in entries if not any(e is g for g in gone)]
                if kept:
                    save_lambdas(path, kept)
                else:
                    os.remove(path)
        self.cache.pop(path, None)
        return gone


def lock_path(path):
    """The lock file that guards the λ file ``path``: one per folder, ``<folder>/.dode.lock``."""
    return os.path.join(os.path.dirname(os.path.abspath(path)), LOCK_NAME)


def file_lock(path):
    """The cross-process lock of ``path``'s folder (filelock: flock on posix, msvcrt on Windows; released if its
    holder dies), after that folder exists. One lock file per folder, so none is left beside each λ file; writes to
    different files of one folder take turns (each holds it for milliseconds)."""
    prepare_folder(path)
    lock = ExplainedLock(lock_path(path), timeout=LOCK_TIMEOUT)
    lock.legacy = os.fspath(path) + ".lock"
    return lock


class ExplainedLock(FileLock):
    """A FileLock whose failures say what to do. Once held, it deletes ``legacy`` (the empty ``<file>.lock`` that
    dode versions before the folder lock left beside each λ file) if no one holds that."""

    legacy = None

    def acquire(self, *args, **kwargs):
        try:
            held = super().acquire(*args, **kwargs)
        except Timeout as e:
            raise TimeoutError(f"{self.lock_file}: another process held this lock for {self.timeout:g} s; if no "
                               "dode is saving λ right now, delete the lock file") from e
        except PermissionError as e:
            raise PermissionError(f"cannot lock {self.lock_file}: its folder is read-only; choose a writable "
                                  "folder or fix its permissions") from e
        if self.legacy and os.path.lexists(self.legacy):
            remove_legacy_lock(self.legacy)
        return held


def remove_legacy_lock(path):
    """Deletes an older dode's ``<file>.lock`` unless another process holds it (then it stays: harmless)."""
    legacy = FileLock(path, timeout=0)
    with suppress(Timeout, OSError):
        with legacy:
            os.remove(path)
