"""The D-ODE sampler functions ComfyUI calls, how they find λ, and the distillation run inside a sampling call.

A sampler chosen by name in the stock KSampler gets no options, so it finds λ itself, in this order:

1. a λ set passed by the "D-ODE Sampler" / "Distill λ" nodes (``extra_options``): it must fit, else an error;
2. a λ set attached to the MODEL by the "D-ODE Model Options" node (``model_options["dode"]``): a warning if it
   does not fit, then on to 3;
3. the λ store (``models/dode_lambdas``), keyed by model identity (the fingerprint, or the checkpoint's AutoV2
   when the model is exactly its checkpoint file: see identity.py), sampler, σ grid and cfg;
4. the policy on a miss (``on_missing``): ``stock`` runs the sampler with λ = 0 (the stock update) and logs
   how to distill; ``auto_distill`` fits λ on this very batch (the paper's Algorithm 1), saves it and returns the
   student's result; ``error`` stops the run.
"""
import logging
from dataclasses import dataclass

from .. import lambdas as core_lambdas
from .. import samplers as core
from . import identity as ident_mod
from . import store

log = logging.getLogger("dode")

MODEL_OPTIONS_KEY = "dode"
POLICIES = ("stock", "auto_distill", "error")
SUFFIX = "_dode"


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
                    self._identity = ident_mod.fingerprint(self.patcher, self.options.identity, store.hash_cache())
                except Exception as e:  # a model we cannot fingerprint must not stop sampling
                    self.identity_error = f"cannot fingerprint this model ({type(e).__name__}: {e})"
        return self._identity


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
    """The λ entry for this call, or ``(None, reason)``. Raises LambdaNotFound for an explicit set that does not fit."""
    sigmas = sigmas.detach().cpu()
    if explicit is not None:
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
    attached = run.options.lambdas
    if attached is not None and attached.entries:
        try:
            key = run.identity.ids if run.identity is not None else None
            return core_lambdas.find_lambdas(list(attached.entries), name, sigmas, model=key, cfg=run.cfg,
                                             source=attached.source), attached.source
        except core_lambdas.LambdaNotFound as e:
            log.warning("[dode] %s: the λ set attached to the model does not fit this run (%s); trying the λ store",
                        dode_name(name), e)
    if run.identity is None:
        return None, run.identity_error
    return store.store().lookup(run.identity.ids, name, sigmas, cfg=run.cfg)


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
            log.info("[dode] %s: λ from %s (%s)", dode_name(name), where, entry.describe())
            return core.sample(model, x, sigmas, sampler=name, lambdas=entry.lambdas, extra_args=extra_args,
                               callback=callback, disable=disable, **solver_kwargs(name, run.flow))
        return on_missing(name, model, x, sigmas, extra_args, callback, disable, run, where)

    sampler_function.__name__ = f"sample_{dode_name(name)}"
    sampler_function.__qualname__ = sampler_function.__name__
    sampler_function.__doc__ = f"D-ODE {name}: λ from the λ store (models/dode_lambdas), else the miss policy."
    sampler_function.dode_solver = name
    return sampler_function


def on_missing(name, model, x, sigmas, extra_args, callback, disable, run, reason):
    policy = run.options.on_missing
    model_text = run.identity.describe() if run.identity is not None else "unidentified model"
    want = grid_text(sigmas, run.cfg)
    if policy == "error":
        raise RuntimeError(f"D-ODE {dode_name(name)}: no λ for {model_text}, {want}: {reason}. Run 'Distill λ' "
                           "with this model, sampler, scheduler, steps, denoise and cfg, or set on_missing to "
                           "stock/auto_distill in 'D-ODE Model Options'")
    if policy == "auto_distill" and run.identity is not None and len(sigmas) >= 3:
        log.info("[dode] %s: no λ for %s (%s); auto-distilling on this batch (teacher %s, scale %d)",
                 dode_name(name), want, run.identity.key, run.options.teacher, run.options.scale)
        if x.shape[0] == 1:
            log.warning("[dode] %s: auto-distilling on a batch of 1; λ fitted on one sample may not generalise "
                        "(a batch of 4 or more is better)", dode_name(name))
        result = distill_in_sampler(name, model, x, sigmas, extra_args, disable, run, run.options.teacher,
                                    run.options.scale)
        entry = result.entry(model=run.identity.key, aliases=run.identity.aliases, cfg=run.cfg,
                             **run.identity.as_meta(), source="auto_distill")
        try:
            path = store.add(run.identity, name, entry)
        except OSError as e:  # keep the (already paid for) result; say why λ was not kept
            log.warning("[dode] %s: could not save λ (%s); this run used it, the next will distill again",
                        dode_name(name), e)
        else:
            log.info("[dode] %s: λ saved to %s (rmse to teacher: λ=0 %.4g → D-ODE %.4g)", dode_name(name), path,
                     result.report.rmse_before, result.report.rmse_after)
        return result.samples
    if policy == "auto_distill":
        reason = f"{reason}; auto_distill needs an identifiable model and at least 2 steps"
    log.info("[dode] %s: no λ for this model/σ grid/cfg (%s; %s) — %s. Running plain %s (λ=0). To use D-ODE, run "
             "'Distill λ' (sampling/dode) once with the same model, sampler, scheduler, steps, denoise and cfg, or "
             "attach 'D-ODE Model Options' with on_missing=auto_distill.", dode_name(name), want,
             run.identity.key if run.identity is not None else "no identity", reason, name)
    return core.sample(model, x, sigmas, sampler=name, lambdas=None, extra_args=extra_args, callback=callback,
                       disable=disable, **solver_kwargs(name, run.flow))


class Progress:
    """Distillation progress on ComfyUI's progress bar: one bar over all phases (teacher, stock, student), a latent
    preview of each step's model output where ComfyUI has previews on, and a check for interruption at every step."""

    def __init__(self, student_steps, phases=("teacher", "student"), node_id=None, previewer=None):
        self.student_steps = student_steps
        self.phases = phases
        self.node_id = node_id
        self.previewer = previewer
        self.totals = {}
        self.bar = None

    def __call__(self, info):
        import comfy.model_management
        import comfy.utils
        comfy.model_management.throw_exception_if_processing_interrupted()
        phase = info.get("phase", "student")
        self.totals[phase] = int(info.get("total", self.student_steps))
        totals = [self.totals.get(p, self.student_steps) for p in self.phases]
        offset = sum(totals[:self.phases.index(phase)]) if phase in self.phases else 0
        if self.bar is None:
            self.bar = comfy.utils.ProgressBar(sum(totals), node_id=self.node_id)
        self.bar.update_absolute(offset + int(info.get("i", 0)) + 1, sum(totals), self.preview(info.get("denoised")))

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
                       compare_stock=False):
    """Runs teacher and student through the guided model this sampler function was given (one sampling call)."""
    phases = ("teacher", "stock", "student") if compare_stock else ("teacher", "student")
    progress = Progress(len(sigmas) - 1, phases, node_id, previewer=previewer_for(run.patcher))
    return core_lambdas.distill(model, x, sigmas, sampler=name, teacher=teacher, scale=int(scale),
                                extra_args=extra_args, callback=progress, compare_stock=compare_stock,
                                disable=disable, **solver_kwargs(name, run.flow))


def make_distill_function(name, teacher, scale, holder, node_id=None):
    """A sampler function for one ``CFGGuider.sample`` call that distills λ and returns the teacher's samples.

    Running inside the guider means CFG, LoRA, ControlNet, hooks and model patches all apply to both runs."""

    def distill_function(model, x, sigmas, extra_args=None, callback=None, disable=None, **ignored):
        run = Run(model, extra_args)
        if run.identity is None:
            raise RuntimeError(f"Distill λ: {run.identity_error}")
        holder["result"] = distill_in_sampler(name, model, x, sigmas, extra_args, disable, run, teacher, scale,
                                              node_id=node_id, compare_stock=True)
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
