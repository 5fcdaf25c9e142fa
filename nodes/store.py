"""The λ folder ``models/dode_lambdas`` (registered with ComfyUI's folder_paths) and the λ store over it."""
import logging
import os
import re
import threading
from dataclasses import replace

from ..lambdas import LambdaStore, catalog, load_lambdas
from ..lambdas.resolve import skip_reason
from . import feedback

FOLDER = "dode_lambdas"
EXTENSIONS = {".safetensors"}
log = logging.getLogger("dode")

_lock = threading.Lock()
_store = None


def register_folder():
    """Adds ``dode_lambdas`` to folder_paths (keeping paths from extra_model_paths.yaml), idempotently.

    ``models/dode_lambdas`` is only named here; it is created when the first λ file is written."""
    import folder_paths
    default = os.path.join(folder_paths.models_dir, FOLDER)
    table = folder_paths.folder_names_and_paths
    if FOLDER in table:
        paths = list(table[FOLDER][0])
        if default not in paths:
            paths.append(default)
    else:
        paths = [default]
    table[FOLDER] = (paths, set(EXTENSIONS))
    return paths


def folders():
    import folder_paths
    if FOLDER not in folder_paths.folder_names_and_paths:
        register_folder()
    return folder_paths.get_folder_paths(FOLDER)


def store():
    """The process-wide LambdaStore over the λ folders (rebuilt if the configured folders change)."""
    global _store
    dirs = folders()
    with _lock:
        if _store is None or _store.folders != dirs:
            _store = LambdaStore(dirs)
        return _store


def hash_cache():
    """Where checkpoint hashes (for the AutoV2 alias) are kept across restarts: next to the λ files."""
    return os.path.join(folders()[0], "sha256-cache.json")


def save_folder():
    """Where new λ files go: the first (default) λ folder, created on demand."""
    folder = folders()[0]
    os.makedirs(folder, exist_ok=True)
    return folder


def file_list():
    """λ file names as ComfyUI lists them (relative to the λ folders)."""
    import folder_paths
    try:
        return folder_paths.get_filename_list(FOLDER)
    except Exception:
        return []


def full_path(name):
    """The path of the λ file ``name`` (as listed by file_list), or a FileNotFoundError naming the folders."""
    import folder_paths
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(f"λ file {name!r} not found in {', '.join(folders())}")
    return path


def file_stamp(name):
    """What changes when the λ file changes (for IS_CHANGED / fingerprint_inputs)."""
    try:
        stat = os.stat(full_path(name))
        return f"{name}:{stat.st_mtime_ns}:{stat.st_size}"
    except (OSError, FileNotFoundError, TypeError):
        return f"{name}:missing"


def folder_stamp():
    """What changes when any λ file changes (for the λ Files node's fingerprint_inputs)."""
    return ";".join(file_stamp(name) for name in file_list())


def safe_stem(text, fallback="model"):
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return stem[:64] or fallback


def default_file(identity, sampler):
    """One λ file per model and sampler: ``<checkpoint stem>-<key>-<sampler>.safetensors`` in the save folder."""
    name = f"{safe_stem(identity.name)}-{identity.key.split('-')[-1][:10]}-{sampler}.safetensors"
    return os.path.join(save_folder(), name)


def add(identity, sampler, fit_or_entry, **meta):
    """Merges a fit into this model's λ file for ``sampler`` (atomic write); returns the path. If the checkpoint's
    AutoV2 is still being hashed (identity.alias_pending), the entry gets it as an alias when it is known."""
    path = default_file(identity, sampler)
    store().add(path, fit_or_entry, **meta)
    pending = getattr(identity, "alias_pending", None)
    if pending is not None and not identity.aliases:
        pending.add_done_callback(lambda job: add_alias(path, identity.key, job))
    return path


def add_alias(path, key, job):
    """Adds the AutoV2 that ``job`` computed as an alias to the entries of ``path`` keyed ``key`` (a λ file written
    before the hash was known)."""
    try:
        alias = job.result()
        entries = load_lambdas(path)
        stale = [e for e in entries if e.model == key and alias not in e.aliases]
        if stale:
            store().add(path, [replace(e, aliases=[*e.aliases, alias]) for e in stale])
            log.info("[dode] %s: added the checkpoint's AutoV2 %s as an alias", os.path.basename(path), alias)
    except Exception as e:  # never break a generation over an alias; the entry still serves its fingerprint
        log.warning("[dode] could not add the AutoV2 alias to %s (%s: %s)", path, type(e).__name__, e)


def report_skipped(st):
    """Tells, once per file and reason, each λ file the store skipped and why."""
    for path, why in st.skipped:
        why = skip_reason(path, why)
        feedback.tell_once(("skipped", path, why), f"skipped the λ file {os.path.basename(path)}: {why}", "warning",
                           toast=f"Skipped the λ file {os.path.basename(path)}: it cannot be read (the log says why).")



def entry_rows(model_ids=None):
    """One row per entry of every λ file (lambdas/catalog.py), file by file; ``this_model``: it serves ``model_ids``."""
    st, files = store(), []
    for name in file_list():
        try:
            files.append((name, full_path(name)))
        except FileNotFoundError:
            continue
    return catalog.entry_rows(st, files, model_ids)


def remove_entry(name, wanted):
    """Removes the entry with id ``wanted`` from the λ file ``name`` (as file_list names it): lambdas/catalog.py.
    A LookupError (without machine paths) if there is no such file or entry."""
    if not isinstance(name, str) or name not in file_list():
        raise LookupError(f"no λ file {name!r} in the λ folders")
    path = full_path(name)
    removed = catalog.remove_entry(store(), name, path, wanted)
    log.info("[dode] removed the λ entry %s (%s) from %s; %d left", wanted, removed["title"], path, removed["left"])
    return removed