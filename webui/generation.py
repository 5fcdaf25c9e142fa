"""What a generation is: tail or full schedule, flow or not, its CFG scale, a refiner, the schedule type."""
from .names import SCHEDULER_LABEL, SCHEDULER_NAME


def model_sigmas(model):
    """The ascending σ table of the k-diffusion wrapper behind the WebUI's CFG denoiser, or None."""
    return getattr(getattr(model, "inner_model", None), "sigmas", None)


def is_tail(p, model, sigmas):
    """img2img and Hires passes run the tail of a longer schedule."""
    if p is not None:
        return bool(getattr(p, "is_hr_pass", False)) or getattr(p, "init_images", None) is not None
    inner = model_sigmas(model)
    return inner is not None and float(sigmas[0]) < 0.999 * float(inner[-1])


def is_flow(model):
    """Rectified-flow model (Forge: Flux, SD3): the model's noise levels lie in (0, 1]; SD1/SD2/SDXL reach ~14.6."""
    inner = model_sigmas(model)
    return inner is not None and len(inner) > 0 and float(inner[-1]) <= 1.0


def model_sigma_range(model):
    """(σ_min, σ_max) of the model behind the WebUI's CFG denoiser, or None."""
    inner = model_sigmas(model)
    return None if inner is None or len(inner) == 0 else (float(inner[0]), float(inner[-1]))


def cfg_scale(p, extra_args):
    """The CFG scale of this pass (Forge's Hires CFG on the Hires pass)."""
    if p is not None and getattr(p, "is_hr_pass", False) and getattr(p, "hr_cfg", None) is not None:  # Forge
        return float(p.hr_cfg)
    cfg = (extra_args or {}).get("cond_scale", getattr(p, "cfg_scale", None))
    return None if cfg is None else float(cfg)


def refiner_active(p):
    """True if a refiner switches models mid-schedule."""
    return getattr(p, "refiner_checkpoint_info", None) is not None and \
        (getattr(p, "refiner_switch_at", 1.0) or 1.0) < 1.0


def on_fitted_schedule(p):
    """True if the generation (its Hires pass: the Hires schedule type) asked for the schedule type "D-ODE fitted"."""
    kind = getattr(p, "hr_scheduler", None) if getattr(p, "is_hr_pass", False) else getattr(p, "scheduler", None)
    return kind in (SCHEDULER_LABEL, SCHEDULER_NAME)
