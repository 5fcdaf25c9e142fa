"""The D-ODE sampler functions ComfyUI calls, how they find λ, and the distillation run inside a sampling call.

A sampler chosen by name in the stock KSampler gets no options, so it finds λ itself, in this order:

1. a λ set passed by the "D-ODE Sampler" / "Distill λ" nodes (``extra_options``): it must fit, else an error;
2. a λ set attached to the MODEL by the "D-ODE Model Options" node (``model_options["dode"]``): a warning if it
   does not fit, then on to 3;
3. the λ store (``models/dode_lambdas``), keyed by model identity (the fingerprint, or the checkpoint's AutoV2
   when the model is exactly its checkpoint file: see identity.py), sampler, σ grid and cfg;
4. the policy on a miss (``on_missing``): ``stock`` runs ComfyUI's own stock sampler (HOST_STOCK: λ = 0 is the stock
   update, and the host's own code makes it the host's bits, e.g. its float32 DEIS coefficients) and says how to
   distill; ``auto_distill`` fits λ on this very batch (the paper's Algorithm 1), saves it and returns the student's
   result (kept in memory if it cannot be saved); ``error`` stops the run.

Every run says what it did in the log and in the browser (feedback.py).
"""
import logging
import os
import threading
from dataclasses import dataclass, replace

from .. import lambdas as core_lambdas
from .. import samplers as core
from . import feedback
from . import identity as ident_mod
from . import store

log = logging.getLogger("dode")

MODEL_OPTIONS_KEY = "dode"
POLICIES = ("stock", "auto_distill", "error")
SUFFIX = "_dode"
# ComfyUI's stock sampler for each D-ODE solver (name in comfy.k_diffusion.sampling, options): what λ = 0 reproduces
HOST_STOCK = {"euler": ("sample_euler", {}), "heun": ("sample_heun", {}), "dpmpp_2m": ("sample_dpmpp_2m", {}),
              "dpmpp_2s": ("sample_dpmpp_2s_ancestral", {"eta": 0.0}),
              "dpmpp_3m": ("sample_dpmpp_3m_sde", {"eta": 0.0}),
              "ipndm": ("sample_ipndm", {}), "deis": ("sample_deis", {})}
_unsaved = []  # auto-distill fits that could not be saved: used in this process, never lost to a bad λ folder
_unsaved_lock = threading.Lock()


@dataclass(frozen=True)
class LambdaSet:
    """The DODE_LAMBDAS value passed between nodes: λ entries and where they came from."""
    entries: tuple
    source: str = "a λ set"

    def __deepcopy__(self, memo):  # immutable; ComfyUI deep-copies model_options on clone
        return self

    def describe(self):
        return f"{self.source}: " + "; ".join(e.describe() for e in self.entries)


@dataclass(frozen=True)
class DodeOptions:
    """What the "D-ODE Model Options" node attaches to a MODEL (``model_options["dode"]``)."""
    on_missing: str = "stock"
    lambdas: LambdaSet = None
    identity: str = "full"
    teacher: str = core_lambdas.DEFAULT_TEACHER
    scale: int = core_lambdas.DEFAULT_SCALE

    def __post_init__(self):
        if self.on_missing not in POLICIES:
            raise ValueError(f"on_missing must be one of {POLICIES}, got {self.on_missing!r}")
        if self.identity not in ident_mod.IDENTITY_MODES:
            raise ValueError(f"identity must be one of {ident_mod.IDENTITY_MODES}, got {self.identity!r}")

    def __deepcopy__(self, memo):
        return self


def dode_name(name):
    return name + SUFFIX


class Run:
    """What a sampler function learns about the call: the ModelPatcher, the cfg, the options and the identity."""

    def __init__(self, model, extra_args):
        guider = getattr(model, "inner_model", None)
        self.patcher = getattr(guider, "model_patcher", None)
        cfg = getattr(guider, "cfg", None)
        self.cfg = float(cfg) if isinstance(cfg, (int, float)) else None
        self.guider_problem = guider_problem(guider)
        model_options = (extra_args or {}).get("model_options") or {}
        options = model_options.get(MODEL_OPTIONS_KEY)
        self.options = options if isinstance(options, DodeOptions) else DodeOptions()
        self.flow = flow_option(getattr(getattr(guider, "inner_model", None), "model_sampling", None))
        self._identity = None
        self.identity_error = None

    @property
    def identity(self):
        """The model fingerprint, or None (with ``identity_error`` set) if this MODEL does not allow one."""
        if self._identity is None and self.identity_error is None:
            if self.patcher is None:
                self.identity_error = "the sampler was not called through a ComfyUI guider with a ModelPatcher"
            else:
                try:
                    self._identity = model_identity(self.patcher, self.options.identity)
                except Exception as e:  # a model we cannot fingerprint must not stop sampling
                    self.identity_error = f"cannot fingerprint this model ({type(e).__name__}: {e})"
        return self._identity

    def model_text(self):
        return self.identity.name if self.identity is not None else "an unidentified model"


def model_identity(patcher, mode="full"):
    """The fingerprint of ``patcher``, named after the checkpoint or UNET file the running prompt loaded it from
    when ComfyUI does not record the file itself (v0.3.x), so λ files get that name instead of ``model``."""
    identity = ident_mod.fingerprint(patcher, mode, store.hash_cache())
    if identity.name == "model":
        name = loader_file_name()
        if name:
            identity = replace(identity, name=name)
    return identity


def guider_problem(guider):
    """Why λ cannot be keyed for this guider, or None. λ depends on the CFG scale and entries store one; a guider with
    two scales (Guider_DualCFG: ``cfg1``, ``cfg2``; its ``cfg`` stays 1.0) would be keyed as cfg 1, so it is refused."""
    if guider is not None and hasattr(guider, "cfg1") and hasattr(guider, "cfg2"):
        return (f"{type(guider).__name__} has two CFG scales (cfg1 {guider.cfg1:g}, cfg2 {guider.cfg2:g}) and λ is "
                "fitted for one; use a single-scale guider (KSampler, SamplerCustom, CFGGuider) with D-ODE")
    return None


def current_prompt():
    """``(prompt, node id)`` of the prompt ComfyUI is executing now, or ``(None, None)``."""
    instance = feedback.prompt_server()
    queue = getattr(instance, "prompt_queue", None)
    running = getattr(queue, "currently_running", None)
    if not isinstance(running, dict) or len(running) != 1:
        return None, None
    item = next(iter(running.values()))
    prompt = item[2] if isinstance(item, (tuple, list)) and len(item) > 2 else None
    return (prompt, getattr(instance, "last_node_id", None)) if isinstance(prompt, dict) else (None, None)


LOADER_INPUTS = ("ckpt_name", "unet_name")


def loader_file_name(prompt=None, node_id=None):
    """The stem of the checkpoint / UNET file feeding ``node_id``'s ``model`` input in ``prompt`` (default: the
    running prompt), following ``model`` links upstream through LoRA loaders, ModelSampling* nodes, etc.; where the
    node is unknown (ComfyUI tracks it only for prompts queued with a client id), the prompt's only loader; or None."""
    if prompt is None:
        prompt, node_id = current_prompt()
    if not isinstance(prompt, dict):
        return None
    if str(node_id) not in prompt:
        loaders = [key for key, node in prompt.items() if isinstance(node, dict) and
                   any(isinstance((node.get("inputs") or {}).get(name), str) for name in LOADER_INPUTS)]
        node_id = loaders[0] if len(loaders) == 1 else None
    seen = set()
    node = prompt.get(str(node_id))
    while isinstance(node, dict) and id(node) not in seen:
        seen.add(id(node))
        inputs = node.get("inputs") or {}
        for key in LOADER_INPUTS:
            if isinstance(inputs.get(key), str):
                return os.path.splitext(os.path.basename(inputs[key]))[0]
        link = inputs.get("model")
        node = prompt.get(str(link[0])) if isinstance(link, list) and link else None
    return None


def flow_option(model_sampling):
    """The core's ``flow`` option for this model: ComfyUI's offset first σ for rectified-flow (CONST) models, as its
    own DPM++ 2S/3M samplers use it, else False."""
    try:
        import comfy.model_sampling as cms
    except ImportError:
        return False
    if not isinstance(model_sampling, getattr(cms, "CONST", ())):
        return False
    try:
        first = float(model_sampling.percent_to_sigma(1e-4))
    except Exception:
        return True
    return first if 0 < first < 1 else True


def solver_kwargs(name, flow):
    """``flow=`` for the solvers that take it (their stock update depends on the parameterization), else nothing."""
    return {"flow": flow} if flow and getattr(core.get_solver(name), "flow", False) else {}


def grid_text(sigmas, cfg):
    cfg_text = "no cfg" if cfg is None else f"cfg {cfg:g}"
    return f"{len(sigmas) - 1} steps, σ {float(sigmas[0]):.4g}→{float(sigmas[-1]):.4g}, {cfg_text}"


def find_entry(name, sigmas, run, explicit=None, strict=True):
    """The λ entry for this call and where it came from, or ``(None, reason)``. Raises LambdaNotFound for an explicit
    set that does not fit, RuntimeError for an explicit set on a guider λ cannot be keyed for."""
    sigmas = sigmas.detach().cpu()
    if explicit is not None:
        if run.guider_problem:
            raise RuntimeError(f"D-ODE: cannot use {explicit.source}: {run.guider_problem}")
        key = None
        if strict:
            if run.identity is None:
                raise RuntimeError(f"D-ODE: cannot check that {explicit.source} belongs to this model: "
                                   f"{run.identity_error}; turn 'strict' off to use it anyway")
            key = run.identity.ids
        entries = list(explicit.entries)
        if strict:
            return core_lambdas.find_lambdas(entries, name, sigmas, model=key, cfg=run.cfg,
                                             source=explicit.source), explicit.source
        # not strict: any model and any cfg, but still the exact sampler and σ grid (this run's cfg first)
        cfgs = [run.cfg] + [e.cfg for e in entries if e.cfg != run.cfg]
        for cfg in cfgs[:-1]:
            try:
                return core_lambdas.find_lambdas(entries, name, sigmas, cfg=cfg, source=explicit.source), \
                    explicit.source
            except core_lambdas.LambdaNotFound:
                pass
        return core_lambdas.find_lambdas(entries, name, sigmas, cfg=cfgs[-1], source=explicit.source), \
            explicit.source
    if run.guider_problem:
        return None, run.guider_problem
    attached = run.options.lambdas
    if attached is not None and attached.entries:
        try:
            key = run.identity.ids if run.identity is not None else None
            return core_lambdas.find_lambdas(list(attached.entries), name, sigmas, model=key, cfg=run.cfg,
                                             source=attached.source), attached.source
        except core_lambdas.LambdaNotFound as e:
            feedback.tell(f"{dode_name(name)}: the λ set attached to the model does not fit this run ({e}); trying "
                          "the λ store", "warning")
    if run.identity is None:
        return None, run.identity_error
    unsaved = unsaved_fits()
    if unsaved:
        try:
            return core_lambdas.find_lambdas(unsaved, name, sigmas, model=run.identity.ids, cfg=run.cfg,
                                             source="memory"), "an unsaved fit of this process"
        except core_lambdas.LambdaNotFound:
            pass
    st = store.store()
    entry, where = st.lookup(run.identity.ids, name, sigmas, cfg=run.cfg)
    skipped = store.report_skipped(st)
    if entry is None:
        where = nearest_entry(store.all_entries(st), name, sigmas, run.identity.ids, run.cfg) or where
        if skipped:
            where = f"{where} (skipped unreadable λ files: {skipped})"
    return entry, where


def grid_differences(entry, sampler, sigmas, ids, cfg):
    """What differs between ``entry`` and a request for λ on the grid ``sigmas`` (empty if it serves it)."""
    diffs = []
    if entry.sampler != sampler:
        diffs.append(f"sampler {entry.sampler}, not {sampler}")
    if not set(ids) & entry.ids:
        diffs.append(f"model ({entry.metrics.get('model_name') or entry.model})")
    if entry.steps != len(sigmas) - 1:
        diffs.append(f"{entry.steps} steps, not {len(sigmas) - 1}")
    elif not entry.same_grid(sigmas):
        diffs.append("σ grid (another scheduler, shift, denoise or a fitted schedule)")
    if entry.cfg != cfg:
        diffs.append(f"cfg {'none' if entry.cfg is None else f'{entry.cfg:g}'}, not "
                     f"{'none' if cfg is None else f'{cfg:g}'}")
    return diffs


def nearest_entry(entries, sampler, sigmas, ids, cfg):
    """"nearest entry: <entry> in <file>, which differs in <...>" for the entry with the fewest differences among
    ``(entry, file)`` pairs, or None when there are none."""
    scored = [(len(d), i, e, f, d) for i, (e, f) in enumerate(entries)
              for d in [grid_differences(e, sampler, sigmas, ids, cfg)]]
    if not scored:
        return None
    _, _, entry, where, diffs = min(scored, key=lambda item: item[:2])
    return f"nearest entry: {entry.describe()} in {where}, which differs in {'; '.join(diffs)}"


def origin(entry, where):
    """How a λ entry is named to the user: its file name (or set), and whether its σ grid is a fitted schedule."""
    text = os.path.basename(where) if isinstance(where, str) and where.endswith(".safetensors") else where
    kind = "fitted schedule" if getattr(entry, "schedule", "given") == "fitted" else "given grid"
    return f"{text} ({kind})"


def make_sampler_function(name):
    """The ``sample_<name>_dode`` function for ``comfy.k_diffusion.sampling`` (and for KSAMPLER objects)."""
    core.get_solver(name)

    def sampler_function(model, x, sigmas, extra_args=None, callback=None, disable=None, dode_lambdas=None,
                         dode_strict=True, **ignored):
        if ignored:
            log.debug("[dode] %s ignores sampler options %s", dode_name(name), sorted(ignored))
        run = Run(model, extra_args)
        entry, where = find_entry(name, sigmas, run, explicit=dode_lambdas, strict=dode_strict)
        if entry is not None:
            feedback.tell(f"{dode_name(name)}: λ from {origin(entry, where)}; {entry.describe()}")
            return core.sample(model, x, sigmas, sampler=name, lambdas=entry.lambdas, extra_args=extra_args,
                               callback=callback, disable=disable, **solver_kwargs(name, run.flow))
        return on_missing(name, model, x, sigmas, extra_args, callback, disable, run, where)

    sampler_function.__name__ = f"sample_{dode_name(name)}"
    sampler_function.__qualname__ = sampler_function.__name__
    sampler_function.__doc__ = f"D-ODE {name}: λ from the λ store (models/dode_lambdas), else the miss policy."
    sampler_function.dode_solver = name
    return sampler_function


def stock_sample(name, model, x, sigmas, extra_args, callback, disable, run):
    """The stock sampler for ``name``: ComfyUI's own (HOST_STOCK), so that λ = 0 gives the host's bits; the core's
    λ = 0 update where this ComfyUI lacks that sampler."""
    try:
        import comfy.k_diffusion.sampling as kds
        function_name, options = HOST_STOCK[name]
        host = getattr(kds, function_name)
    except (ImportError, AttributeError):
        return core.sample(model, x, sigmas, sampler=name, lambdas=None, extra_args=extra_args, callback=callback,
                           disable=disable, **solver_kwargs(name, run.flow))
    return host(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)


def on_missing(name, model, x, sigmas, extra_args, callback, disable, run, reason):
    policy = run.options.on_missing
    want = grid_text(sigmas, run.cfg)
    if policy == "error":
        raise RuntimeError(f"D-ODE {dode_name(name)}: no λ for {run.model_text()}, {want}: {reason}. Run 'Distill "
                           "λ' with this model, sampler, scheduler, steps, denoise and cfg, or set on_missing to "
                           "stock/auto_distill in 'D-ODE Model Options'")
    if policy == "auto_distill" and run.identity is not None and len(sigmas) >= 3 and not run.guider_problem:
        return auto_distill(name, model, x, sigmas, extra_args, disable, run, want)
    if policy == "auto_distill":
        reason = f"{reason}; auto_distill needs an identifiable model, a single CFG scale and at least 2 steps"
    feedback.tell(f"{dode_name(name)}: stock {name} (λ = 0): no λ for {run.model_text()}, {want}: {reason}. To use "
                  "D-ODE, run 'Distill λ' (sampling/dode) once with the same model, sampler, scheduler, steps, "
                  "denoise and cfg, or attach 'D-ODE Model Options' with on_missing=auto_distill.")
    return stock_sample(name, model, x, sigmas, extra_args, callback, disable, run)


def keep_unsaved(entry):
    """Keeps a fit that could not be saved for this process's lookups (newest first)."""
    with _unsaved_lock:
        _unsaved.insert(0, entry)


def unsaved_fits():
    """The fits this process could not save, newest first."""
    with _unsaved_lock:
        return list(_unsaved)


def auto_distill(name, model, x, sigmas, extra_args, disable, run, want):
    """Fits λ on this batch, saves it and returns the student's samples. A fit that cannot be saved (a read-only or
    broken λ folder) is still used, kept in memory for this process, and the user is told why."""
    feedback.tell(f"{dode_name(name)}: no λ for {run.model_text()}, {want}; auto-distilling on this batch "
                  f"(teacher {run.options.teacher}, scale {run.options.scale})")
    if x.shape[0] == 1:
        log.warning("[dode] %s: auto-distilling on a batch of 1; λ fitted on one sample may not generalise "
                    "(a batch of 4 or more is better)", dode_name(name))
    result = distill_in_sampler(name, model, x, sigmas, extra_args, disable, run, run.options.teacher,
                                run.options.scale, compare_stock=True)
    entry = result.entry(model=run.identity.key, aliases=run.identity.aliases, cfg=run.cfg,
                         **run.identity.as_meta(), source="auto_distill")
    try:
        path = store.add(run.identity, name, entry)
    except Exception as e:  # the fit is paid for: sample with it, keep it, say why it was not saved
        keep_unsaved(entry)
        feedback.tell(f"{dode_name(name)}: λ fitted but not saved ({type(e).__name__}: {e}); this run uses it and "
                      "this ComfyUI keeps it in memory until it restarts. Fix or remove the file named above.",
                      "warning")
    else:
        feedback.tell(f"{dode_name(name)}: λ saved to {os.path.basename(path)}; {result.report.summary()}")
    return result.samples


class Progress:
    """Distillation progress on ComfyUI's progress bar: one bar over all phases (teacher, stock, student, or teacher
    and fit), a latent preview of each step's model output where ComfyUI has previews on, and a check for
    interruption at every step. The final fit's own budget (network rows) is only known when it starts, so its phase
    is FIT_UNITS wide, to keep one total from the first step."""
    FIT_UNITS = 100

    def __init__(self, student_steps, phases=("teacher", "student"), node_id=None, previewer=None):
        self.student_steps = student_steps
        self.phases = phases
        self.node_id = node_id
        self.previewer = previewer
        self.totals = {"fit": self.FIT_UNITS}
        self.bar = None
        self.value = 0

    def __call__(self, info):
        import comfy.model_management
        import comfy.utils
        comfy.model_management.throw_exception_if_processing_interrupted()
        phase = info.get("phase", "student")
        step, total = int(info.get("i", 0)) + 1, int(info.get("total", self.student_steps))
        if phase == "fit":
            step, total = min(self.FIT_UNITS, self.FIT_UNITS * step // max(total, 1)), self.FIT_UNITS
        self.totals[phase] = total
        totals = [self.totals.get(p, self.student_steps) for p in self.phases]
        offset = sum(totals[:self.phases.index(phase)]) if phase in self.phases else 0
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(sum(totals), node_id=self.node_id)
        self.value = max(self.value, offset + step)
        self.bar.update_absolute(self.value, sum(totals), self.preview(info.get("denoised")))

    def finish(self):
        """Fills the bar to its end: a final-objective fit that converges early stops short of its budget."""
        total = sum(self.totals.get(p, self.student_steps) for p in self.phases)
        if self.bar is not None and self.value < total:
            self.value = total
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


def fit_phases(objective, compare_stock):
    """The progress phases of a fit, in order (what lambdas.distill reports through its callback)."""
    if objective == "final":
        return ("teacher", "fit")
    return ("teacher", "stock", "student") if compare_stock else ("teacher", "student")


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
                                  **solver_kwargs(name, run.flow))
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


def register_samplers():
    """Adds ``<name>_dode`` for every D-ODE solver to ComfyUI's sampler lists, in place and idempotently.

    Sets ``comfy.k_diffusion.sampling.sample_<name>_dode`` and appends the name to ``KSAMPLER_NAMES`` and
    ``SAMPLER_NAMES`` (the list object behind ``KSampler.SAMPLERS`` and KSamplerSelect). Modules are never
    reloaded. Returns the names now registered."""
    import comfy.k_diffusion.sampling as kds
    import comfy.samplers as cs
    lists = []
    for lst in (getattr(cs, "KSAMPLER_NAMES", None), getattr(cs, "SAMPLER_NAMES", None),
                getattr(getattr(cs, "KSampler", None), "SAMPLERS", None)):
        if isinstance(lst, list) and not any(lst is seen for seen in lists):
            lists.append(lst)
    registered = []
    for name in core.SAMPLER_NAMES:
        label = dode_name(name)
        attr = f"sample_{label}"
        existing = getattr(kds, attr, None)
        if existing is not None and getattr(existing, "dode_solver", None) is None:
            log.warning("[dode] %s already exists (from another pack?); not replacing it", attr)
            continue
        if existing is None:
            setattr(kds, attr, make_sampler_function(name))
        for lst in lists:
            if label not in lst:
                lst.append(label)
        registered.append(label)
    return registered
