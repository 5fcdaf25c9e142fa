"""A λ store: folders (and single files) of λ files, indexed once and re-read only when a file changes."""
import glob
import os

from .files import LambdaFileError, LambdaNotFound, as_entries, find_lambdas, load_lambdas, save_lambdas

SUFFIX = ".safetensors"


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
        """``(entry, path)`` for the first file with a matching entry, else ``(None, reason)``."""
        reasons = []
        for path in self.paths():
            entries = self.entries(path)
            if not entries:
                continue
            try:
                return find_lambdas(entries, sampler, sigmas, model=model, cfg=cfg, source=path), path
            except LambdaNotFound as e:
                reasons.append(str(e))
        where = ", ".join(self.folders + self.files) or "no folders"
        if not reasons:
            return None, f"no λ files in {where}"
        return None, reasons[0] if len(reasons) == 1 else f"no match in {len(reasons)} λ files in {where}"

    def add(self, path, fit_or_entry, **meta):
        """Merges entries into the λ file ``path`` (replacing any for the same target), atomically."""
        new = as_entries(fit_or_entry, **meta)
        old = load_lambdas(path) if os.path.exists(path) else []
        kept = [e for e in old if not any(e.same_target(n) for n in new)]
        save_lambdas(path, kept + new)
        self.cache.pop(os.fspath(path), None)
        return path
