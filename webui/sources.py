"""The WebUI's λ sources in the core's one lookup order: models/D-ODE, then the checkpoint's sidecar."""
import os

from ..lambdas import LambdaStore
from ..lambdas.match import Request, place
from ..lambdas.resolve import lookup_order, resolve, skip_reason, store_source
from .identity import is_bare_checkpoint
from .paths import lambda_dir, sidecar

_stores = {}


def store_for(folders=(), files=()):
    """The process's one LambdaStore over ``folders`` and ``files`` (its index is cached)."""
    key = (tuple(folders), tuple(files))
    if key not in _stores:
        _stores[key] = LambdaStore(folders, files)
    return _stores[key]


def entry_ref(store, path, entry):
    """``<file name>#<index>`` of ``entry`` in ``path``."""
    k = next((k for k, e in enumerate(store.entries(path)) if e is entry or e.same_target(entry)), "?")
    return f"{os.path.basename(path)}#{k}"


def stores(info):
    """The stores of models/D-ODE and, if there is one, the checkpoint's sidecar."""
    side = sidecar(info)
    return [store_for([lambda_dir()])] + ([store_for(files=[side])] if side and os.path.isfile(side) else [])


def sources(ident, info):
    """models/D-ODE, the sidecar, and for a bare checkpoint the sidecar's bare-checkpoint fits of any model."""
    own = stores(info)
    order = [store_source(store) for store in own]
    if len(own) > 1 and "+nets-" not in ident:  # the sidecar's place names the checkpoint: another host's fit serves
        order.append(store_source(own[1], any_model=True, accept=is_bare_checkpoint))
    return order


def skipped_files(info):
    """``[(file name, why), ...]`` of the unreadable λ files this generation's lookup skipped."""
    return [(os.path.basename(path), skip_reason(path, why)) for store in stores(info) for path, why in store.skipped]


def search(request, ident, info):
    """(entry, ``<file>#<index>``) from the core's one lookup order, or (None, reason)."""
    found = resolve(request, lookup_order(stores=sources(ident, info)))
    if found.entry is None:
        return None, found.reason
    return found.entry, f"{place(found.where)}#{found.index}" if found.where.endswith(".safetensors") else found.where


def lookup(name, ident, info, sigmas, cfg):
    """(λ tensor, infotext reference) for exactly this sampler, σ grid and CFG scale, or (None, reason)."""
    entry, found = search(Request.grid(name, sigmas, ident, cfg), ident, info)
    return (None, found) if entry is None else (entry.lambdas, found)


def lookup_schedule(name, ident, info, steps, sigma_max, cfg):
    """(fitted entry, infotext reference) for this sampler, steps, first σ (last σ 0) and CFG, or (None, reason)."""
    return search(Request.fitted(name, steps, sigma_max, 0.0, ident, cfg), ident, info)
