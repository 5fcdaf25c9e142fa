"""λ sidecars end in .safetensors: keep them out of the WebUI's checkpoint list (now and after every refresh)."""
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


def hide_sidecars():
    """Prunes the list built before scripts load, and wraps ``sd_models.list_models`` (once) to prune after it."""
    try:
        from modules import sd_models
    except ImportError:
        return
    prune_sidecars(sd_models)
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
