"""The D-ODE nodes (ComfyUI V3 node API, category ``sampling/dode``). Thin: validate, call the core, return."""
import dataclasses
import inspect
import logging
import math
import os

import torch

import comfy.sample
import comfy.samplers
import comfy.utils
from comfy_api.latest import io

from .. import lambdas as core_lambdas
from .. import plot
from .. import samplers as core
from ..lambdas.catalog import entry_title
from ..lambdas.fit import RELIABLE_LATENTS, small_batch
from ..lambdas.resolve import POLICIES, save_or_keep
from . import feedback, sampling, schedule, store
from .identity import IDENTITY_MODES
from .distill import make_distill_function
from .options import MODEL_OPTIONS_KEY, DodeOptions, LambdaSet, dode_name

log = logging.getLogger("dode")

CATEGORY = "sampling/dode"
DodeLambdas = io.Custom("DODE_LAMBDAS")
STORE_LOOKUP = "(λ store lookup)"
NO_FILES = "no λ files yet — run Distill λ first"
LATENT_TOOLTIP = ("A batch of latents; 16 or more, as many as you can afford with fit_schedule: a small batch fits the "
                  "σ grid to its own seeds (docs/benchmarks.md, \"Where a small batch's overfit lives\").")


def solver_input(id="sampler_name", default="euler", tooltip="The D-ODE sampler (solver)."):
    return io.Combo.Input(id, options=list(core.SAMPLER_NAMES), default=default, tooltip=tooltip)


def lambda_file_options():
    return [STORE_LOOKUP] + store.file_list()


def load_file_options():
    """Load λ's choices: the λ files, or one entry that says what to do when there are none (an empty combo shows
    "undefined" in the frontend and sends no value)."""
    return store.file_list() or [NO_FILES]


def fit_schedulers():
    """The schedulers Distill λ can fit: every stock one (the 'dode' scheduler serves fits, it is not one)."""
    return [s for s in comfy.samplers.KSampler.SCHEDULERS if s != schedule.NAME]


def require_choice(node, name, value, options):
    """A ValueError naming the input unless ``value`` is one of ``options`` (checked before any work is done)."""
    problem = check_choice(name, value, options)
    if problem:
        raise ValueError(f"{node}: {problem}")


def load_set(name):
    path = store.full_path(name)
    return LambdaSet(tuple(core_lambdas.load_lambdas(path)), source=f"λ file {name}")


def compute_sigmas(model, sampler_name, scheduler, steps, denoise):
    """The σ grid the stock KSampler uses for these settings (same code path, so λ keys match)."""
    if steps < 2:
        raise ValueError(f"Distill λ needs at least 2 steps (got {steps}): one step has nothing to correct")
    if not denoise > 0:
        raise ValueError(f"denoise must be > 0 (got {denoise}); with denoise 0 there is nothing to sample")
    ks = comfy.samplers.KSampler(model, steps=steps, device="cpu", sampler=dode_name(sampler_name),
                                 scheduler=scheduler, denoise=denoise, model_options=model.model_options)
    return ks.sigmas


def fix_latent(model, latent):
    """An empty latent with the wrong channel count becomes the model's (as KSampler does)."""
    fix = comfy.sample.fix_empty_latent_channels
    if len(inspect.signature(fix).parameters) > 2:  # newer ComfyUI also takes the latent's downscale ratios
        return fix(model, latent["samples"], latent.get("downscale_ratio_spacial"),
                   latent.get("downscale_ratio_temporal"))
    return fix(model, latent["samples"])


def check_choice(name, value, options):
    """A COMBO value that ComfyUI v0.3.x does not check for V3 nodes: None if valid, else the error text."""
    options = list(options)
    if value is None or value in options:
        return None
    return f"{name}: {value!r} is not one of {', '.join(map(str, options))}"


class DistillLambdas(io.ComfyNode):
    """Fits λ (and optionally the σ schedule) for one sampler: teacher and student run in one guided sampling call."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DODEDistillLambdas",
            display_name="Distill λ (D-ODE)",
            category=CATEGORY,
            description="Fits the D-ODE λ (and with fit_schedule the σ grid) for this model, sampler, steps and cfg on "
                        "a batch of latents, saves them to models/dode_lambdas and returns a ready SAMPLER, the grid "
                        "to sample with (SIGMAS) and the model with the fit attached (MODEL). After this, "
                        "'<sampler>_dode' in the stock KSampler uses them, and the 'dode' scheduler gives the fitted "
                        "grid. The report is shown on the node.",
            inputs=[
                io.Model.Input("model", tooltip="The model to fit for (LoRAs and ModelSampling* nodes applied)."),
                io.Conditioning.Input("positive", tooltip="The prompt the fit samples with (λ does not depend on "
                                                           "it much; use a typical one)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, as in KSampler."),
                io.Latent.Input("latent_image", tooltip=LATENT_TOOLTIP),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="The noise seed of the fit batch. It stays fixed (control after generate: "
                                     "fixed), so queueing an unchanged graph again reuses the fit instead of "
                                     "fitting again."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="The CFG scale you will sample with (λ is only valid for it)."),
                solver_input(tooltip="The D-ODE sampler to fit λ for (use '<name>_dode' in KSampler afterwards)."),
                io.Combo.Input("scheduler", options=fit_schedulers(),
                               tooltip="The scheduler whose grid is fitted (or the start of a fitted schedule). "
                                       "Afterwards the 'dode' scheduler in KSampler serves a fitted schedule."),
                io.Int.Input("steps", default=10, min=2, max=1000, tooltip="Sampling steps you will use."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="As in KSampler: < 1 fits the tail of a longer grid (img2img)."),
                solver_input("teacher", default=core_lambdas.DEFAULT_TEACHER,
                             tooltip="The sampler that runs the fine reference trajectory."),
                io.Int.Input("scale", default=core_lambdas.DEFAULT_SCALE, min=1, max=100,
                             tooltip="Teacher sub-steps per student step (teacher cost ≈ scale × steps)."),
                io.Boolean.Input("save", default=True, tooltip="Save λ into models/dode_lambdas."),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="A custom σ grid; overrides scheduler, steps and denoise."),
                io.Combo.Input("objective", options=list(core_lambdas.OBJECTIVES),
                               default=core_lambdas.DEFAULT_OBJECTIVE, optional=True,
                               tooltip="final: λ fitted to the teacher's final sample (what you see); greedy: the "
                                       "paper's step-by-step fit."),
                io.Boolean.Input("fit_schedule", default=False, optional=True,
                                 tooltip="Also fit the interior σ's (implies objective final). Sample with the "
                                         "SIGMAS output, or the 'dode' scheduler with the same model, sampler, "
                                         "steps and cfg."),
            ],
            outputs=[
                io.Sampler.Output(display_name="sampler",
                                  tooltip="A D-ODE sampler with this fit, for SamplerCustom / SamplerCustomAdvanced."),
                DodeLambdas.Output(display_name="lambdas",
                                   tooltip="The fitted λ set: for D-ODE Sampler, D-ODE Model Options or Save λ."),
                io.Latent.Output(display_name="teacher_latent",
                                 tooltip="The teacher's samples of the fit batch (the reference the fit matches)."),
                io.String.Output(display_name="report",
                                 tooltip="The fit's report (λ per evaluation, the σ grid, the distance to the "
                                         "teacher); also shown on the node."),
                io.Image.Output(display_name="lambda_plot",
                                tooltip="λ per network evaluation (x: the σ the network runs at) and the RMSE to "
                                        "the teacher of the stock sampler and of D-ODE."),
                io.Sigmas.Output(display_name="sigmas",
                                 tooltip="The grid to sample with: the fitted schedule, or the input grid."),
                io.Model.Output(display_name="model",
                                tooltip="The input model with this fit attached: a KSampler fed by it uses the fit "
                                        "and re-runs whenever this node distills again."),
            ],
            is_output_node=True,  # saving the fit is its job: a graph of Distill λ alone runs
        )

    @classmethod
    def validate_inputs(cls, scheduler=None):
        """Only ``scheduler``, the one choice whose list changes (so ComfyUI's own checks, min/max included, still
        run for every other input, and one cause gives one error that names its input). The fixed choices are
        checked first thing in execute."""
        if scheduler == schedule.NAME:
            return (f"Distill λ fits a stock scheduler's grid; pick the one to start from (e.g. '{schedule.FALLBACK}')."
                    " The 'dode' scheduler then serves the fitted grid in KSampler")
        return check_choice("scheduler", scheduler, fit_schedulers()) or True

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, cfg, sampler_name, scheduler, steps, denoise,
                teacher, scale, save, sigmas=None, objective=None, fit_schedule=False):
        objective = objective or core_lambdas.DEFAULT_OBJECTIVE
        for name, value, options in (("sampler_name", sampler_name, core.SAMPLER_NAMES),
                                     ("teacher", teacher, core.SAMPLER_NAMES),
                                     ("objective", objective, core_lambdas.OBJECTIVES)):
            require_choice("Distill λ", name, value, options)
        custom = sigmas is not None
        if not custom:
            problem = cls.validate_inputs(scheduler=scheduler)
            if problem is not True:
                raise ValueError(f"Distill λ: scheduler: {problem}")
            sigmas = compute_sigmas(model, sampler_name, scheduler, steps, denoise)
        elif len(sigmas) < 3:
            raise ValueError(f"Distill λ needs a σ grid of at least 2 steps, got {len(sigmas) - 1}")
        latent = fix_latent(model, latent_image)
        advice = small_batch(latent.shape[0])
        if advice:
            feedback.tell(f"Distill λ: {advice}. Set batch_size {RELIABLE_LATENTS} or more on the empty latent.",
                          "warning", toast=f"Distill λ: a batch of {latent.shape[0]} may fit only these seeds; set "
                                           f"batch_size {RELIABLE_LATENTS} or more on the empty latent.")
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        holder = {}
        fn = make_distill_function(sampler_name, teacher, scale, holder, objective=objective,
                                            schedule=bool(fit_schedule))
        samples = comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.KSAMPLER(fn), sigmas, positive,
                                             negative, latent, noise_mask=latent_image.get("noise_mask"),
                                             disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        result, identity = holder["result"], holder["identity"]
        entry = result.entry(model=identity.key, aliases=identity.aliases, cfg=holder["cfg"],
                             **identity.as_meta(), scheduler="custom sigmas" if custom else scheduler,
                             denoise=None if custom else float(denoise), seed=int(seed))
        where = "not saved (save is off)"
        if save:
            where, why = save_or_keep(entry, lambda e: store.add(identity, sampler_name, e))
            if why:  # the fit is paid for: returned, and kept for the *_dode samplers
                where, save = why, False
                feedback.tell(f"Distill λ: {why}", "warning",
                              toast="Distill λ: the fit could not be saved; this run and this ComfyUI session use "
                                    "it (the log says why).")
        summary = result.report.summary()
        report = (f"D-ODE {sampler_name}: {entry.describe()}\nλ: "
                  + ", ".join(f"{v:.4f}" for v in entry.lambdas.tolist())
                  + "\nσ: " + ", ".join(f"{v:.4g}" for v in entry.sigmas.tolist())
                  + f"\n{result.report.table()}\nsaved: {where}")
        saved = 'saved to ' + os.path.basename(where) if save else where
        feedback.tell(f"Distill λ: {entry.describe()}; {summary}; {saved}",
                      toast=f"Distill λ: {entry_title(entry, 'custom σ' if custom else scheduler)}; {rmse_text(result.report)}; "
                            f"{saved if save or not why_unsaved(where) else 'not saved (see the warning)'}")
        lambdas = LambdaSet((entry,), source=f"Distill λ ({sampler_name}, {entry.steps} steps)")
        sampler = comfy.samplers.KSAMPLER(sampling.make_sampler_function(sampler_name),
                                          extra_options={"dode_lambdas": lambdas, "dode_strict": True})
        out = latent_image.copy()
        out.pop("downscale_ratio_spacial", None)
        out.pop("downscale_ratio_temporal", None)
        out["samples"] = samples
        return io.NodeOutput(sampler, lambdas, out, report, lambda_chart(result, entry), entry.sigmas.float(),
                             with_fit(model, lambdas), ui={"text": [report]})


def rmse_text(report):
    """The fit's gain in words: "distance to the teacher 0.0123 → 0.0045 (stock → D-ODE)"."""
    if math.isnan(report.rmse_stock):
        return f"distance to the teacher {report.rmse_after:.4g}"
    return f"distance to the teacher {report.rmse_stock:.4g} → {report.rmse_after:.4g} (stock → D-ODE)"


def why_unsaved(where):
    return where.startswith("λ fitted but not saved")


def with_fit(model, lambdas):
    """A clone of ``model`` with ``lambdas`` attached (model_options["dode"]), keeping its other D-ODE options."""
    patched = model.clone()
    options = patched.model_options.get(MODEL_OPTIONS_KEY)
    options = options if isinstance(options, DodeOptions) else DodeOptions()
    patched.model_options[MODEL_OPTIONS_KEY] = dataclasses.replace(options, lambdas=lambdas)
    return patched


def lambda_chart(result, entry):
    """Distill λ's IMAGE output: λ per evaluation over the σ the network runs at, with the stock → D-ODE RMSE."""
    lambdas = entry.lambdas.tolist()
    sigmas = [s["sigma"] for s in result.report.steps]  # the fit records every evaluation, in order
    try:
        return plot.distill_plot(result.sampler, entry.steps, lambdas, sigmas, result.report.rmse_stock,
                                 result.report.rmse_after, teacher=result.teacher, scale=result.scale)
    except Exception as e:  # λ is fitted (and saved) by now: a chart problem must not fail the node
        log.warning("[dode] Distill λ: could not draw the λ chart (%s: %s)", type(e).__name__, e, exc_info=True)
        return torch.ones(1, 64, 64, 3)


class DODESampler(io.ComfyNode):
    """A D-ODE SAMPLER for SamplerCustom / SamplerCustomAdvanced, with λ from a set, a file or the store."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DODESampler",
            display_name="D-ODE Sampler",
            category=CATEGORY,
            description="A D-ODE sampler for SamplerCustom/SamplerCustomAdvanced. λ comes from the connected λ set, "
                        "else the chosen λ file, else the λ store (as '<name>_dode' in KSampler does). An explicit "
                        "set or file that does not fit the run is an error.",
            inputs=[
                solver_input(tooltip="The D-ODE sampler; λ must have been fitted for it."),
                io.Combo.Input("lambda_file", options=lambda_file_options(), default=STORE_LOOKUP,
                               tooltip="A λ file from models/dode_lambdas, or the store lookup (as '<name>_dode' in "
                                       "KSampler)."),
                io.Boolean.Input("strict", default=True,
                                 tooltip="Require an explicit λ set to match this model and cfg (off: only the "
                                         "sampler and σ grid must match)."),
                DodeLambdas.Input("lambdas", optional=True,
                                  tooltip="A λ set (Distill λ, Load λ); it wins over the file and the store."),
            ],
            outputs=[io.Sampler.Output(display_name="sampler",
                                       tooltip="A SAMPLER for SamplerCustom / SamplerCustomAdvanced.")],
        )

    @classmethod
    def validate_inputs(cls, lambda_file=None):
        """Only the λ file, whose list changes (ComfyUI checks the rest itself; sampler_name in execute)."""
        return check_choice("lambda_file", lambda_file, lambda_file_options()) or True

    @classmethod
    def execute(cls, sampler_name, lambda_file, strict, lambdas=None):
        require_choice("D-ODE Sampler", "sampler_name", sampler_name, core.SAMPLER_NAMES)
        if lambdas is None and lambda_file != STORE_LOOKUP:
            lambdas = load_set(lambda_file)
        options = {"dode_strict": bool(strict)}
        if lambdas is not None:
            options["dode_lambdas"] = lambdas
        return io.NodeOutput(comfy.samplers.KSAMPLER(sampling.make_sampler_function(sampler_name),
                                                     extra_options=options))

    @classmethod
    def fingerprint_inputs(cls, lambda_file=STORE_LOOKUP, **kwargs):
        return "" if lambda_file == STORE_LOOKUP else store.file_stamp(lambda_file)


class LoadLambdas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DODELoadLambdas",
            display_name="Load λ (D-ODE)",
            category=CATEGORY,
            description="Loads a λ file from models/dode_lambdas (re-read when the file changes).",
            inputs=[io.Combo.Input("lambda_file", options=load_file_options(),
                                   tooltip="A λ file in models/dode_lambdas (or a folder from extra_model_paths). "
                                           "Distill λ writes one; λ Files (D-ODE) lists their entries.")],
            outputs=[DodeLambdas.Output(display_name="lambdas", tooltip="The file's λ entries."),
                     io.String.Output(display_name="info", tooltip="What the file holds, one entry after another.")],
        )

    @classmethod
    def execute(cls, lambda_file):
        if lambda_file in (None, NO_FILES):
            raise ValueError(f"Load λ: {NO_FILES}")
        lambdas = load_set(lambda_file)
        return io.NodeOutput(lambdas, lambdas.describe())

    @classmethod
    def fingerprint_inputs(cls, lambda_file=None, **kwargs):
        return store.file_stamp(lambda_file)

    @classmethod
    def validate_inputs(cls, lambda_file=None):
        if lambda_file in (None, NO_FILES) or not store.file_list():
            return f"{NO_FILES} (it saves them to models/dode_lambdas)"
        try:
            store.full_path(lambda_file)
        except FileNotFoundError:
            return f"λ file {lambda_file!r} is not in the λ folders (moved or deleted?); pick another"
        return True


class SaveLambdas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DODESaveLambdas",
            display_name="Save λ (D-ODE)",
            category=CATEGORY,
            description="Saves a λ set into models/dode_lambdas/<filename>.safetensors (merged with the entries "
                        "already there; atomic write).",
            inputs=[DodeLambdas.Input("lambdas", tooltip="The λ set to save (e.g. Distill λ's lambdas output)."),
                    io.String.Input("filename", default="dode_lambdas",
                                    tooltip="File name in models/dode_lambdas (.safetensors is added).")],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, lambdas, filename):
        name = store.safe_stem(filename, fallback="dode_lambdas")
        path = store.store().add(os.path.join(store.save_folder(), name + ".safetensors"), list(lambdas.entries))
        count = f"{len(lambdas.entries)} λ entr{'y' if len(lambdas.entries) == 1 else 'ies'}"
        feedback.tell(f"Save λ: saved {count} to {path}", toast=f"Save λ: saved {count} to {os.path.basename(path)}")
        return io.NodeOutput()


class ModelOptions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DODEModelOptions",
            display_name="D-ODE Model Options",
            category=CATEGORY,
            description="Configures '<sampler>_dode' in the stock KSampler for this MODEL: what to do when the λ "
                        "store has no λ (stock λ=0, auto-distill on first use, or error), how the model is "
                        "identified, and an optional λ set to use first.",
            inputs=[
                io.Model.Input("model", tooltip="The model the '<sampler>_dode' samplers will run with."),
                io.Combo.Input("on_missing", options=list(POLICIES), default="stock",
                               tooltip="stock: run with λ=0 and log how to distill; auto_distill: fit λ on the "
                                       "first run's batch (teacher cost) and save it; error: stop."),
                io.Combo.Input("identity", options=["full", "ignore_patches"], default="full",
                               tooltip="ignore_patches: LoRAs and other weight patches do not change the model "
                                       "identity, so λ fitted without them is reused."),
                solver_input("teacher", default=core_lambdas.DEFAULT_TEACHER,
                             tooltip="auto_distill: the sampler of the fine reference run."),
                io.Int.Input("scale", default=core_lambdas.DEFAULT_SCALE, min=1, max=100,
                             tooltip="auto_distill: teacher sub-steps per student step."),
                DodeLambdas.Input("lambdas", optional=True,
                                  tooltip="A λ set to try before the λ store (a warning if it does not fit)."),
            ],
            outputs=[io.Model.Output(display_name="model",
                                     tooltip="The model with these options, for the stock KSampler's '<sampler>_dode'.")],
        )

    @classmethod
    def execute(cls, model, on_missing, identity, teacher, scale, lambdas=None):
        for name, value, options in (("on_missing", on_missing, POLICIES), ("identity", identity, IDENTITY_MODES),
                                     ("teacher", teacher, core.SAMPLER_NAMES)):
            require_choice("D-ODE Model Options", name, value, options)
        patched = model.clone()
        patched.model_options[MODEL_OPTIONS_KEY] = DodeOptions(
            on_missing=on_missing, lambdas=lambdas, identity=identity, teacher=teacher, scale=int(scale))
        return io.NodeOutput(patched)


class LambdaFiles(io.ComfyNode):
    """Lists the entries of the λ files (those of the connected model marked); web/dode.js shows them on the node with
    a button that removes one (POST /dode/lambdas/remove, nodes/routes.py)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DODELambdaFiles",
            display_name="λ Files (D-ODE)",
            category=CATEGORY,
            description="Lists the entries the λ files in models/dode_lambdas hold (with a model connected: which "
                        "serve it), on the node; each has a button that removes it from its file (atomic rewrite; "
                        "the other entries stay).",
            inputs=[io.Model.Input("model", optional=True,
                                   tooltip="Mark the entries fitted for this model (LoRAs and ModelSampling* count).")],
            outputs=[io.String.Output(display_name="listing", tooltip="The entries, one line each.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model=None):
        from .context import model_identity
        identity = None if model is None else model_identity(model)
        rows = store.entry_rows(None if identity is None else identity.ids)
        lines = [f"{r['file']}: {r['error']}" if "error" in r else
                 f"{'* ' if r['this_model'] else ''}{r['file']}: {r['title']} — {r['model']}" for r in rows]
        mine = sum(1 for r in rows if r.get("this_model"))
        head = (f"{len(rows)} λ entr{'y' if len(rows) == 1 else 'ies'}" if rows else NO_FILES) + \
            ("" if identity is None else f"; {mine} for {identity.name} (marked *)")
        listing = "\n".join([head, *lines])
        return io.NodeOutput(listing, ui={"text": [listing], "dode_entries": rows,
                                          "dode_model": [None if identity is None else identity.name]})

    @classmethod
    def fingerprint_inputs(cls, model=None):
        return store.folder_stamp()  # runs again whenever a λ file changes


NODES = [DistillLambdas, DODESampler, LoadLambdas, SaveLambdas, ModelOptions, LambdaFiles]
