"""One resolution order and one miss policy for every host: which fit serves a run, and what a miss does."""
import threading
from dataclasses import dataclass, field

from .match import LambdaNotFound, differences, miss_message, nearest, place

POLICIES = ("stock", "auto_distill", "error")
UNSAVED_NAME = "an unsaved fit of this process"


@dataclass(frozen=True)
class Source:
    """A place a host offers fits from: ``files()`` yields ``(entries, where)``; ``skipped()`` ``(path, why)``."""
    name: str
    files: object
    skipped: object = tuple
    must_fit: bool = False   # an explicit set: a miss is an error
    warns: bool = False      # a set attached to the model: a miss is told, then the lookup goes on
    any_model: bool = False  # a place that names the model itself (the WebUI's sidecar)
    accept: object = None    # entry -> bool: which of its entries this source offers (None: all)


def entry_source(name, entries, **kwargs):
    """A source of one list of entries."""
    entries = list(entries)
    return Source(name, lambda: [(entries, name)] if entries else [], **kwargs)


def store_source(store, name=None, **kwargs):
    """A source over a LambdaStore's readable files (its skipped files are named on a miss)."""
    name = name or ", ".join(store.folders + store.files) or "no folders"
    return Source(name, lambda: [(store.entries(path), path) for path in store.paths()], lambda: store.skipped,
                  **kwargs)


class Unsaved:
    """Fits that could not be saved, newest first: this process keeps using them (both hosts)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.entries = []

    def keep(self, entry):
        with self.lock:
            self.entries.insert(0, entry)

    def list(self):
        with self.lock:
            return list(self.entries)

    def clear(self):
        with self.lock:
            self.entries.clear()


UNSAVED = Unsaved()


def unsaved_source():
    return Source(UNSAVED_NAME, lambda: [(UNSAVED.list(), UNSAVED_NAME)])


def lookup_order(explicit=None, attached=None, stores=()):
    """The one order: an explicit set (must fit), the model's attached set (a miss is told), unsaved fits, stores."""
    order = [] if explicit is None else [Source(**{**explicit.__dict__, "must_fit": True})]
    if explicit is None:
        order += [] if attached is None else [Source(**{**attached.__dict__, "warns": True})]
        order += [unsaved_source(), *stores]
    return order


@dataclass
class Found:
    """What a lookup found: ``entry`` from ``where`` (entry ``index`` there), or None and the miss ``reason``."""
    entry: object = None
    where: str = None
    index: int = None
    reason: str = None
    told: list = field(default_factory=list)  # misses of attached sets, for the host to tell


def resolve(request, sources):
    """The first entry of ``sources`` (in order) that serves ``request``, else the nearest entry and what differs."""
    offered, skipped, told = [], [], []
    for source in sources:
        wanted = request.anyone() if source.any_model else request
        own = [(k, entry, where) for entries, where in source.files() for k, entry in enumerate(entries)
               if source.accept is None or source.accept(entry)]
        for k, entry, where in own:
            if not differences(entry, wanted):
                return Found(entry, where, k, told=told)
        skipped += list(source.skipped())
        if source.must_fit or source.warns:
            text = miss_message(wanted, nearest([(e, w) for _, e, w in own], wanted), source.name)
            if source.must_fit:
                raise LambdaNotFound(f"{text}. {request.hint}")
            told.append(text)
        offered += [(e, w) for _, e, w in own]
    names = ", ".join(s.name for s in sources if s.name != UNSAVED_NAME) or "no λ source"
    near = nearest(offered, request)
    reason = (f"no {request.describe()} in {names}: no readable λ entry" if near is None and skipped
              else miss_message(request, near, names))
    return Found(reason=reason + skipped_text(skipped), told=told)


def unserved(request, problem):
    """The miss message when no lookup could run: "no <request>: <problem>"."""
    return f"no {request.describe()}: {problem}"


def skip_reason(path, why):
    """Why a λ file was skipped, without the path the store's reason begins with."""
    return why[len(path) + 2:] if why.startswith(path + ": ") else why


def skipped_text(skipped):
    """" (skipped unreadable λ files: <name> (<why>); ...)" or ""."""
    if not skipped:
        return ""
    lines = [f"{place(path)} ({skip_reason(path, why)})" for path, why in skipped]
    return f" (skipped unreadable λ files: {'; '.join(lines)})"


def miss_action(policy, blocker=None):
    """What a miss does under ``policy``: "error", "distill" (when nothing blocks a fit) or "stock"."""
    if policy not in POLICIES:
        raise ValueError(f"a miss policy is one of {', '.join(POLICIES)}, got {policy!r}")
    if policy == "auto_distill" and blocker is None:
        return "distill"
    return "error" if policy == "error" else "stock"


def save_or_keep(entry, save):
    """``(path, None)`` once ``save(entry)`` wrote it, else ``(None, why)`` with the entry kept in UNSAVED."""
    try:
        return save(entry), None
    except Exception as e:  # the fit is paid for: the run uses it and this process keeps it
        UNSAVED.keep(entry)
        return None, not_saved_text(e)


def not_saved_text(error):
    return (f"λ fitted but not saved ({type(error).__name__}: {error}); this run uses it and this process keeps it "
            "in memory until it restarts")

