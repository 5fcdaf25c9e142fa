"""Distillation inside one ComfyUI sampling call: the fit, its progress bar and previews, auto-distill on a miss."""
import logging
import os

from .. import lambdas as core_lambdas
from .. import samplers as core
from ..lambdas.fit import RELIABLE_LATENTS, small_batch
from ..lambdas.progress import FitProgress, fit_phases
from ..lambdas.resolve import save_or_keep
from ..samplers import flow_option
from . import feedback, store
from .context import Run
from .options import dode_name

log = logging.getLogger("dode")


def auto_distill(name, model, x, sigmas, extra_args, disable, run, reason):
    """Fits λ on this batch, saves it (else keeps it in memory: resolve.save_or_keep) and returns the samples."""
    feedback.tell(f"{dode_name(name)}: {reason}; auto-distilling on this batch "
                  f"(teacher {run.options.teacher}, scale {run.options.scale})")
    advice = small_batch(x.shape[0])
    if advice:
        feedback.tell(f"{dode_name(name)}: {advice}; give the first run of these settings a batch of "
                      f"{RELIABLE_LATENTS} or more", "warning",
                      toast=f"{dode_name(name)}: a batch of {x.shape[0]} may fit only these seeds; run these "
                            f"settings first with a batch of {RELIABLE_LATENTS} or more.")
    result = distill_in_sampler(name, model, x, sigmas, extra_args, disable, run, run.options.teacher,
                                run.options.scale, compare_stock=True)
    entry = result.entry(model=run.identity.key, aliases=run.identity.aliases, cfg=run.cfg,
                         **run.identity.as_meta(), source="auto_distill")
    path, why = save_or_keep(entry, lambda e: store.add(run.identity, name, e))
    if why:
        feedback.tell(f"{dode_name(name)}: {why}. Fix or remove the file named above.", "warning")
    else:
        feedback.tell(f"{dode_name(name)}: λ saved to {os.path.basename(path)}; {result.report.summary()}")
    return result.samples


class Progress:
    """Distillation progress on ComfyUI's progress bar: one bar over all phases (lambdas/progress.py), a latent preview
    of each step's model output where ComfyUI has previews on, and a check for interruption at every step."""

    def __init__(self, student_steps, phases=("teacher", "student"), node_id=None, previewer=None):
        self.count = FitProgress(student_steps, phases)
        self.node_id = node_id
        self.previewer = previewer
        self.bar = None

    def __call__(self, info):
        import comfy.model_management
        import comfy.utils
        comfy.model_management.throw_exception_if_processing_interrupted()
        done, total = self.count.update(info)
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(total, node_id=self.node_id)
        self.bar.update_absolute(done, total, self.preview(info.get("denoised")))

    def finish(self):
        """Fills the bar to its end: a final-objective fit that converges early stops short of its budget."""
        total = self.count.total()
        if self.bar is not None and self.count.done < total:
            self.count.done = total
            self.bar.update_absolute(total, total)

    def preview(self, denoised):
        """ComfyUI's preview of this step's model output (as KSampler sends it), or None."""
        if self.previewer is None or denoised is None:
            return None
        try:
            return self.previewer.decode_latent_to_preview_image("JPEG", denoised)
        except Exception as e:  # a preview must never stop the distillation
            log.warning("[dode] latent previews are off for this distillation (%s: %s)", type(e).__name__, e)
            self.previewer = None
            return None


def previewer_for(patcher):
    """ComfyUI's latent previewer for this model (what KSampler uses), or None: previews are off, this latent format
    has none, or this ComfyUI has no ``latent_preview``."""
    if patcher is None:
        return None
    try:
        import latent_preview
        return latent_preview.get_previewer(patcher.load_device, patcher.model.latent_format)
    except Exception as e:
        log.debug("[dode] no latent previews while distilling (%s: %s)", type(e).__name__, e)
        return None


def distill_in_sampler(name, model, x, sigmas, extra_args, disable, run, teacher, scale, node_id=None,
                       compare_stock=False, objective=None, schedule=False, sigma_range=None):
    """Runs teacher and student through the guided model this sampler function was given (one sampling call).
    ``objective`` None: the core's default (DEFAULT_OBJECTIVE)."""
    objective = "final" if schedule else objective or core_lambdas.DEFAULT_OBJECTIVE
    progress = Progress(len(sigmas) - 1, fit_phases(objective, compare_stock), node_id,
                        previewer=previewer_for(run.patcher))
    result = core_lambdas.distill(model, x, sigmas, sampler=name, teacher=teacher, scale=int(scale),
                                  extra_args=extra_args, callback=progress, compare_stock=compare_stock,
                                  disable=disable, objective=objective, schedule=schedule, sigma_range=sigma_range,
                                  **flow_option(core.get_solver(name), run.flow))
    progress.finish()
    return result


def model_sigma_range(run):
    """``(σ_min, σ_max)`` of the model being sampled (what a fitted schedule must stay inside), or None."""
    ms = getattr(getattr(run.patcher, "model", None), "model_sampling", None)
    if run.patcher is not None:
        try:
            ms = run.patcher.get_model_object("model_sampling")
        except Exception:
            pass
    try:
        return float(ms.sigma_min), float(ms.sigma_max)
    except (AttributeError, TypeError, ValueError):
        return None


def make_distill_function(name, teacher, scale, holder, node_id=None, objective=None, schedule=False):
    """A sampler function for one ``CFGGuider.sample`` call that distills λ and returns the teacher's samples.

    Running inside the guider means CFG, LoRA, ControlNet, hooks and model patches all apply to both runs."""

    def distill_function(model, x, sigmas, extra_args=None, callback=None, disable=None, **ignored):
        run = Run(model, extra_args)
        if run.identity is None:
            raise RuntimeError(f"Distill λ: {run.identity_error}")
        holder["result"] = distill_in_sampler(name, model, x, sigmas, extra_args, disable, run, teacher, scale,
                                              node_id=node_id, compare_stock=True, objective=objective,
                                              schedule=schedule,
                                              sigma_range=model_sigma_range(run) if schedule else None)
        holder["identity"] = run.identity
        holder["cfg"] = run.cfg
        return holder["result"].teacher_samples

    distill_function.__name__ = f"distill_{dode_name(name)}"
    return distill_function
