"""What the λ files hold, as a host lists it: an entry's title and id, one row per entry, removing one by its id."""
import hashlib
import json
import os


def entry_title(entry, scheduler=None):
    """A λ entry as the user set it up: "euler, 4 steps (simple), cfg 2, fitted schedule" (no fingerprints)."""
    scheduler = scheduler or entry.metrics.get("scheduler")
    grid = f" ({scheduler})" if isinstance(scheduler, str) and scheduler else ""
    cfg = "" if entry.cfg is None else f", cfg {entry.cfg:g}"
    fitted = ", fitted schedule" if entry.schedule == "fitted" else ""
    return f"{entry.sampler}, {entry.steps} steps{grid}{cfg}{fitted}"


def entry_id(entry):
    """A short id of a λ entry that stays the same while the entry does (what a UI names to remove one)."""
    key = [entry.sampler, entry.model, entry.cfg, entry.schedule, [round(float(v), 9) for v in entry.sigmas.tolist()],
           entry.created]
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:12]


def entry_rows(store, files, model_ids=None):
    """One dict per entry of the λ files ``files`` (``(name, path)`` pairs) in ``store``: ``file``, ``id``,
    ``title``, ``model``, ``this_model`` (the entry serves one of ``model_ids``; None: no model given), ``created``;
    an unreadable file is one row with ``error``."""
    rows = []
    for name, path in files:
        entries = store.entries(path)
        if not entries and path in store.problems:
            rows.append({"file": name, "error": "cannot be read (the log says why)"})
        for entry in entries:
            rows.append({"file": name, "id": entry_id(entry), "title": entry_title(entry),
                         "model": entry.metrics.get("model_name") or entry.metrics.get("checkpoint") or entry.model
                         or "unnamed model",
                         "this_model": None if model_ids is None else bool(set(model_ids) & entry.ids),
                         "created": entry.created or ""})
    return rows


def remove_entry(store, name, path, wanted):
    """Removes the entry with id ``wanted`` from the λ file ``path`` (named ``name`` to the user), atomically under
    the folder lock (a file left empty is deleted). ``{"file", "id", "title", "left"}``; LookupError (naming no
    machine path) if there is no such entry."""
    if not isinstance(wanted, str):
        raise LookupError(f"{name} has no entry {wanted!r}")
    gone = store.remove(path, lambda entry: entry_id(entry) == wanted)
    if not gone:
        raise LookupError(f"{name} has no entry {wanted!r} (removed already?)")
    left = len(store.entries(path)) if os.path.exists(path) else 0
    return {"file": name, "id": wanted, "title": entry_title(gone[0]), "left": left}
