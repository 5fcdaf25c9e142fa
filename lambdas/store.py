"""A λ store: folders (and single files) of λ files, indexed once and re-read only when a file changes."""
import logging
import os

from filelock import FileLock, Timeout

from .atomic import clean_stale_temps, prepare_folder
from .files import load_lambdas, save_lambdas
from .match import Request
from .resolve import resolve, store_source
from .schema import LambdaFileError, as_entries

SUFFIX = ".safetensors"
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
