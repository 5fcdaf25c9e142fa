"""λ sidecars end in .safetensors: keep them out of the WebUI's checkpoint list (now and after every refresh).

Host workaround: the folder scan (``modelloader.load_models``) is wrapped to drop sidecars, so the checkpoint list
never opens one (a damaged sidecar printed a traceback on every refresh); the list is also pruned after each scan."""
from .paths import SIDECAR_SUFFIX


def prune_sidecars(sd_models):
    """Drops λ sidecars (and their aliases) from ``sd_models``' checkpoint list."""
    listed = getattr(sd_models, "checkpoints_list", {})
    aliases = getattr(sd_models, "checkpoint_aliases", {})
    for title, info in list(listed.items()):
        if str(getattr(info, "filename", "")).endswith(SIDECAR_SUFFIX):
            del listed[title]
            for alias in [a for a, target in aliases.items() if target is info]:
                del aliases[alias]


def without_sidecars(load_models):
    """``load_models`` (the WebUI's folder scan) without the λ sidecars it finds."""
    def load(*args, **kwargs):
        return [f for f in load_models(*args, **kwargs) if not str(f).endswith(SIDECAR_SUFFIX)]
    load.dode_drops_sidecars = True
    load.__wrapped__ = load_models
    return load


def hide_sidecars():
    """Prunes the list built before scripts load, and wraps the folder scan and ``sd_models.list_models`` (once)."""
    try:
        from modules import sd_models
    except ImportError:
        return
    prune_sidecars(sd_models)
    loader = getattr(sd_models, "modelloader", None)
    scan = getattr(loader, "load_models", None)
    if scan is not None and not getattr(scan, "dode_drops_sidecars", False):
        loader.load_models = without_sidecars(scan)
    original = getattr(sd_models, "list_models", None)
    if original is None or getattr(original, "dode_prunes_sidecars", False):
        return

    def list_models(*args, **kwargs):
        result = original(*args, **kwargs)
        prune_sidecars(sd_models)
        return result
    list_models.dode_prunes_sidecars = True
    list_models.__wrapped__ = original
    sd_models.list_models = list_models
