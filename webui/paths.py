"""Where the WebUI's λ files live: models/D-ODE and the checkpoint's sidecar."""
import os

LAMBDA_DIR = "D-ODE"
SIDECAR_SUFFIX = ".dode.safetensors"


def lambda_dir():
    """``models/D-ODE`` (honours ``--models-dir`` and ``--data-dir``)."""
    from modules import paths
    return os.path.join(paths.models_path, LAMBDA_DIR)


def sidecar(info):
    """``<checkpoint stem>.dode.safetensors`` next to the checkpoint of ``info``, or None."""
    filename = getattr(info, "filename", None)
    return os.path.splitext(filename)[0] + SIDECAR_SUFFIX if filename else None


def distill_file(info, ident):
    """The file auto-distill adds to: ``models/D-ODE/<checkpoint stem>_<identity>.dode.safetensors``."""
    stem = os.path.splitext(os.path.basename(getattr(info, "filename", "") or "checkpoint"))[0]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
    return os.path.join(lambda_dir(), f"{stem}_{ident}{SIDECAR_SUFFIX}")
