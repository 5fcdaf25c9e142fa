"""The WebUI side of D-ODE: which λ a generation uses, and how the samplers appear in the WebUI.

Per call of a D-ODE sampler (txt2img, img2img, each Hires pass):

1. identity: the checkpoint's AutoV2 hash (``sd_checkpoint_info.shorthash``; under ``--no-hashing`` the file is
   hashed here, once per file version);
2. lookup of the exact (model, sampler, σ grid, CFG) in ``models/D-ODE/*.safetensors`` (an entry matches if its model
   or one of its aliases is the AutoV2: ComfyUI records the AutoV2 as an alias), then in the checkpoint's
   sidecar ``<checkpoint stem>.dode.safetensors`` (for a bare checkpoint the sidecar also accepts bare-checkpoint
   entries of another model identity, since its location already names the checkpoint, so a file written by another
   host works); active extra networks (LoRA, ...) are part of the identity;
3. on a miss: auto-distill when enabled and the schedule is a full one (txt2img; tails only with the tails option),
   else the stock sampler (λ = 0) with one log line per combination, or an error if the miss policy says so.
   img2img and Hires passes run the *tail* of a longer schedule: they use an entry fitted for exactly that tail, else
   the stock sampler, never a λ fitted for another grid (the lookup compares the whole σ grid).

The infotext gets ``D-ODE λ: <file>#<entry>`` (``Hires D-ODE λ`` for the Hires pass) or ``none``.

The schedule type "D-ODE fitted" (``fitted_schedule``) gives the σ grid a fit chose for this checkpoint, sampler, number
of steps and CFG scale, else the stock Karras schedule; ``D-ODE schedule`` in the infotext says which. The WebUI calls
a schedule function with the step count and σ range only, so the sampler and the generation's settings come from the
processing object that ``remember`` recorded just before sampling (``process_before_every_sampling`` of the script in
scripts/dode_webui.py), checked against the ``inner_model`` the WebUI passes (the sampler's own k-diffusion wrapper).
"""
import hashlib
import json
import logging
import os

import torch

from ..lambdas import DEFAULT_OBJECTIVE, DEFAULT_SCALE, DEFAULT_TEACHER, OBJECTIVES, LambdaStore, autov2, distill
from ..lambdas.match import Request, place
from ..lambdas.resolve import lookup_order, miss_action, resolve, save_or_keep, store_source, unserved
from ..samplers import SAMPLER_NAMES, SOLVERS, nfe, sample

log = logging.getLogger("dode.webui")

LABEL_SUFFIX = " (D-ODE)"  # ends in ")", so the WebUI never splits a scheduler name off the label
INFOTEXT_KEY = "D-ODE λ"
INFOTEXT_FIT = "D-ODE fit"
INFOTEXT_SCHEDULE = "D-ODE schedule"
SCHEDULER_NAME = "dode_fitted"
SCHEDULER_LABEL = "D-ODE fitted"
FALLBACK_SCHEDULER = "karras"  # the stock schedule type "D-ODE fitted" gives without a fit, and the grid a fit starts from
HIRES_PREFIX = "Hires "
SECTION = ("dode", "D-ODE")
LAMBDA_DIR = "D-ODE"
SIDECAR_SUFFIX = ".dode.safetensors"
MISS_POLICIES = ("stock sampler, log once", "stock sampler, silent", "error")
OPTION_DEFAULTS = {
    "dode_auto_distill": False,
    "dode_distill_tails": False,
    "dode_teacher": DEFAULT_TEACHER,
    "dode_scale": DEFAULT_SCALE,
    "dode_objective": DEFAULT_OBJECTIVE,
    "dode_fit_schedule": True,
    "dode_miss_policy": MISS_POLICIES[0],
}
STOCK_OPTION_KEYS = ("scheduler",)  # options copied from the stock WebUI sampler of the same label

_stores = {}
_logged = set()
_current_call = {"p": None}  # host workaround (current-call global): the generation about to sample; see remember


# ---------------------------------------------------------------- registration

def label_for(name):
    """The WebUI label of the core sampler ``name``, e.g. ``euler`` → ``Euler (D-ODE)``."""
    solver = SOLVERS.get(name)
    base = solver.label if solver is not None and solver.label else name.replace("_", " ").title()
    return base + LABEL_SUFFIX


def labels():
    return {label_for(name): name for name in SAMPLER_NAMES}


def sampler_options(name, stock_map):
    """SamplerData options: second_order from the solver's evaluation count, default schedule from the stock twin."""
    options = {}
    probe = torch.tensor([2.0, 1.0, 0.5, 0.0])
    if nfe(name, probe) > len(probe) - 1:
        options["second_order"] = True
    stock = stock_map.get(SOLVERS[name].label) if name in SOLVERS else None
    for key in STOCK_OPTION_KEYS:
        if stock is not None and key in getattr(stock, "options", {}):
            options[key] = stock.options[key]
    return options


def scheduler_suffixes():
    """Every word the WebUI strips off a sampler label as a schedule type (labels, ids, aliases)."""
    try:
        from modules import sd_schedulers
    except ImportError:
        return []
    names = []
    for s in sd_schedulers.schedulers:
        names += [s.label, s.name, *(getattr(s, "aliases", None) or [])]
    return names


def register():
    """Adds one WebUI sampler per core sampler; returns the labels added. Safe to call again (Reload UI)."""
    from modules import sd_samplers, sd_samplers_common, sd_samplers_kdiffusion

    add_sampler = getattr(sd_samplers, "add_sampler", None)  # Forge; A1111/reForge/Classic: manual path
    suffixes = scheduler_suffixes()
    added = []
    for name in SAMPLER_NAMES:
        label = label_for(name)
        if label in sd_samplers.all_samplers_map:
            continue
        clash = [s for s in suffixes if label.endswith(" " + s)]
        if clash:  # the WebUI would silently run DPM++ 2M instead
            log.error("D-ODE: not registering %r: it ends in the schedule type %r", label, clash[0])
            continue
        fn = sampler_function(name)
        data = sd_samplers_common.SamplerData(
            label, lambda model, fn=fn: sd_samplers_kdiffusion.KDiffusionSampler(fn, model),
            [f"dode_{name}"], sampler_options(name, sd_samplers.all_samplers_map))
        if add_sampler is not None:
            add_sampler(data)
        else:
            sd_samplers.all_samplers.append(data)
            sd_samplers.all_samplers_map[label] = data
        added.append(label)
    if added:
        if add_sampler is None:
            sd_samplers.set_samplers()
        cache = getattr(getattr(sd_samplers, "get_sampler_and_scheduler", None), "cache_clear", None)
        if cache is not None:
            cache()
    return added


def register_scheduler():
    """Adds the schedule type "D-ODE fitted" to the WebUI's list (A1111 1.9+ and Forge ``sd_schedulers``); returns
    True if it added it. Safe to call again (Reload UI keeps ``modules.sd_schedulers`` and this module)."""
    try:
        from modules import sd_schedulers
    except ImportError:  # a WebUI without schedule types (before 1.9)
        return False
    if SCHEDULER_LABEL in sd_schedulers.schedulers_map:
        return False
    scheduler = sd_schedulers.Scheduler(SCHEDULER_NAME, SCHEDULER_LABEL, fitted_schedule, default_rho=7.0,
                                        need_inner_model=True)
    sd_schedulers.schedulers.append(scheduler)
    sd_schedulers.schedulers_map[SCHEDULER_NAME] = sd_schedulers.schedulers_map[SCHEDULER_LABEL] = scheduler
    try:
        from modules import sd_samplers
    except ImportError:
        return True
    cache = getattr(getattr(sd_samplers, "get_sampler_and_scheduler", None), "cache_clear", None)
    if cache is not None:  # it maps (sampler, schedule type) names and caches the answers
        cache()
    return True


def hide_sidecars():
    """λ sidecars (``<checkpoint stem>.dode.safetensors``) end in .safetensors, so the WebUI would list them as
    checkpoints. Drops them from its checkpoint list now (the list is built before scripts load) and after every
    ``sd_models.list_models()`` (the refresh buttons)."""
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


def prune_sidecars(sd_models):
    listed = getattr(sd_models, "checkpoints_list", {})
    aliases = getattr(sd_models, "checkpoint_aliases", {})
    for title, info in list(listed.items()):
        if str(getattr(info, "filename", "")).endswith(SIDECAR_SUFFIX):
            del listed[title]
            for alias in [a for a, target in aliases.items() if target is info]:
                del aliases[alias]


# ---------------------------------------------------------------- settings

def opt(key):
    from modules import shared
    value = getattr(shared.opts, key, OPTION_DEFAULTS[key])
    return OPTION_DEFAULTS[key] if value is None else value


def on_ui_settings():
    """Settings section "D-ODE" (registered through script_callbacks.on_ui_settings)."""
    from modules import shared
    try:
        import gradio as gr
        radio, slider = gr.Radio, gr.Slider
    except ImportError:  # headless stubs: the WebUI picks a component from the default's type
        radio = slider = None

    def add(key, label, component=None, args=None):
        shared.opts.add_option(key, shared.OptionInfo(OPTION_DEFAULTS[key], label, component, args, section=SECTION))

    add("dode_auto_distill", "Auto-distill λ on first use of a (checkpoint, sampler, σ grid, CFG) combination "
        "(the first generation also runs the teacher)")
    add("dode_distill_tails", "Also auto-distill for img2img and Hires fix passes (λ fitted for exactly that tail)")
    add("dode_teacher", "Teacher solver for auto-distill", radio, {"choices": list(SAMPLER_NAMES)})
    add("dode_scale", "Teacher sub-steps per student step (scale)", slider, {"minimum": 1, "maximum": 50, "step": 1})
    add("dode_objective", "Auto-distill objective (final: λ fitted to the teacher's final sample; greedy: step by "
        "step, the paper's fit)", radio, {"choices": list(OBJECTIVES)})
    add("dode_fit_schedule", "Auto-distill also fits the σ schedule when the schedule type is \"D-ODE fitted\" "
        "(needs the final objective, which it then uses)")
    add("dode_miss_policy", "When no λ matches", radio, {"choices": list(MISS_POLICIES)})


# ---------------------------------------------------------------- identity and files

def checkpoint(p):
    """(AutoV2 hash or None, CheckpointInfo or None) of the model being sampled."""
    from modules import shared
    sd_model = getattr(p, "sd_model", None) or getattr(shared, "sd_model", None)
    info = getattr(sd_model, "sd_checkpoint_info", None)
    short = getattr(info, "shorthash", None) or (getattr(info, "sha256", None) or "")[:10] or None
    filename = getattr(info, "filename", None)
    if short is None and filename and os.path.isfile(filename):  # --no-hashing
        short = autov2(filename, cache=os.path.join(lambda_dir(), "sha256-cache.json"))
    return (short.lower() if short else None), info


def extra_networks(p):
    """The active extra networks (LoRA, hypernetworks, ...) of the generation as sorted [type, items] pairs."""
    data = getattr(p, "extra_network_data", None) or {}
    return sorted([kind, [str(item) for item in getattr(params, "items", [])]]
                  for kind, params_list in data.items() for params in params_list)


def identity(p):
    """(model identity, CheckpointInfo): the AutoV2 hash, plus ``+nets-<digest>`` of the active extra networks,
    which change the model (a λ fitted with a LoRA is not valid without it, and the other way round)."""
    short, info = checkpoint(p)
    nets = extra_networks(p)
    if short is None or not nets:
        return short, info
    return f"{short}+nets-{hashlib.blake2b(json.dumps(nets).encode(), digest_size=6).hexdigest()}", info


def is_bare_checkpoint(entry):
    """An entry fitted on a bare checkpoint: no extra networks (WebUI) and no weight patches recorded (ComfyUI)."""
    return "+nets-" not in entry.model and entry.metrics.get("model_patches", "none") == "none"


def lambda_dir():
    from modules import paths
    return os.path.join(paths.models_path, LAMBDA_DIR)


def sidecar(info):
    filename = getattr(info, "filename", None)
    return os.path.splitext(filename)[0] + SIDECAR_SUFFIX if filename else None


def store_for(folders=(), files=()):
    key = (tuple(folders), tuple(files))
    if key not in _stores:
        _stores[key] = LambdaStore(folders, files)
    return _stores[key]


def entry_ref(store, path, entry):
    """``<file name>#<index>`` of ``entry`` in ``path``."""
    k = next((k for k, e in enumerate(store.entries(path)) if e is entry or e.same_target(entry)), "?")
    return f"{os.path.basename(path)}#{k}"


def sources(ident, info):
    """The WebUI's stores, in order: models/D-ODE, the checkpoint's sidecar (for a bare checkpoint also another
    host's bare-checkpoint fits: the sidecar's place names the checkpoint)."""
    order = [store_source(store_for([lambda_dir()]))]
    side = sidecar(info)
    if side and os.path.isfile(side):
        order.append(store_source(store_for(files=[side])))
        if "+nets-" not in ident:
            order.append(store_source(store_for(files=[side]), any_model=True, accept=is_bare_checkpoint))
    return order


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


def distill_file(info, ident):
    stem = os.path.splitext(os.path.basename(getattr(info, "filename", "") or "checkpoint"))[0]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
    return os.path.join(lambda_dir(), f"{stem}_{ident}{SIDECAR_SUFFIX}")


# ---------------------------------------------------------------- the sampler

def is_tail(p, model, sigmas):
    """img2img and Hires passes run the tail of a longer schedule."""
    if p is not None:
        return bool(getattr(p, "is_hr_pass", False)) or getattr(p, "init_images", None) is not None
    inner = getattr(getattr(model, "inner_model", None), "sigmas", None)
    return inner is not None and float(sigmas[0]) < 0.999 * float(inner[-1])


def is_flow(model):
    """Rectified-flow model (Forge: Flux, SD3): the model's noise levels lie in (0, 1]; SD1/SD2/SDXL reach ~14.6."""
    inner = getattr(getattr(model, "inner_model", None), "sigmas", None)
    return inner is not None and len(inner) > 0 and float(inner[-1]) <= 1.0


def cfg_scale(p, extra_args):
    if p is not None and getattr(p, "is_hr_pass", False) and getattr(p, "hr_cfg", None) is not None:  # Forge
        return float(p.hr_cfg)
    cfg = (extra_args or {}).get("cond_scale", getattr(p, "cfg_scale", None))
    return None if cfg is None else float(cfg)


def refiner_active(p):
    return getattr(p, "refiner_checkpoint_info", None) is not None and \
        (getattr(p, "refiner_switch_at", 1.0) or 1.0) < 1.0


def pinned(model, sigmas):
    """``model`` with ``model.step`` pinned to the student step that σ falls in.

    The WebUI's CFG denoiser counts calls in ``step`` for prompt editing, skip-early-CFG and the refiner switch; the
    teacher's extra calls must not advance it."""
    if not hasattr(model, "step"):
        return model
    grid = sigmas.detach().double().cpu()[:-1]

    def call(x, sigma, **kwargs):
        s = float(sigma.flatten()[0])
        model.step = max(0, int((grid >= s * (1 - 1e-6)).sum()) - 1)
        return model(x, sigma, **kwargs)
    return call


def set_info(p, key, value):
    if p is not None and getattr(p, "extra_generation_params", None) is not None:
        p.extra_generation_params[key] = value


def log_once(key, message, *args):
    if key not in _logged:
        _logged.add(key)
        log.warning(message, *args)


def model_sigma_range(model):
    """(σ_min, σ_max) of the model behind the WebUI's CFG denoiser (its k-diffusion wrapper's ascending σ table)."""
    inner = getattr(getattr(model, "inner_model", None), "sigmas", None)
    return None if inner is None or len(inner) == 0 else (float(inner[0]), float(inner[-1]))


def fit_settings(schedule):
    """(teacher, scale, objective) for auto-distill from the settings; a schedule fit needs the final objective."""
    teacher = opt("dode_teacher")
    if teacher not in SAMPLER_NAMES:
        log_once(("teacher", teacher), "D-ODE: unknown teacher %r in the settings; using %s", teacher, DEFAULT_TEACHER)
        teacher = DEFAULT_TEACHER
    objective = "final" if schedule else opt("dode_objective")
    if objective not in OBJECTIVES:
        log_once(("objective", objective), "D-ODE: unknown objective %r in the settings; using %s", objective,
                 DEFAULT_OBJECTIVE)
        objective = DEFAULT_OBJECTIVE
    return teacher, max(1, int(opt("dode_scale"))), objective


def auto_distill(name, model, x, sigmas, extra_args, disable, ident, info, cfg, flow=False, schedule=False):
    """Fits λ (and with ``schedule`` the σ grid) on this batch, saves the entry to models/D-ODE, and returns
    (samples, reference, fit summary)."""
    from modules import shared
    teacher, scale, objective = fit_settings(schedule)
    state = getattr(shared, "state", None)

    def progress(d):
        if state is not None:
            state.textinfo = f"D-ODE: fitting λ ({d['phase']} {d['i'] + 1}/{d['total']})"

    step0 = getattr(model, "step", None)
    try:
        fit = distill(pinned(model, sigmas), x, sigmas, sampler=name, teacher=teacher, scale=scale,
                      extra_args=extra_args, callback=progress, disable=disable, flow=flow, objective=objective,
                      schedule=schedule, sigma_range=model_sigma_range(model) if schedule else None,
                      compare_stock=objective == "greedy")
    finally:
        if step0 is not None:
            model.step = step0 + nfe(name, sigmas)
    entry = fit.entry(model=ident, cfg=cfg, host="webui", checkpoint=getattr(info, "title", None) or "")
    path = distill_file(info, ident)
    store = store_for([lambda_dir()])
    r = fit.report
    summary = (f"{objective}{' + schedule' if schedule else ''}, {teacher} x{fit.scale}, "
               f"rmse {r.rmse_stock:.4g} -> {r.rmse_after:.4g}, {r.network_calls} calls, {r.seconds:.1f} s")
    saved, why = save_or_keep(entry, lambda e: store.add(path, e))
    if why:  # a read-only folder, a damaged file in the way: the fit is used and kept (resolve.save_or_keep)
        log.error("D-ODE: %s: %s (%s)", entry.describe(), why, r.summary())
        return fit.samples, "not saved", summary
    log.info("D-ODE: distilled for %s into %s: %s", entry.describe(), path, r.summary())
    return fit.samples, entry_ref(store, path, entry), summary


def on_fitted_schedule(p):
    """True if the generation (its Hires pass: the Hires schedule type) asked for the schedule type "D-ODE fitted"."""
    kind = getattr(p, "hr_scheduler", None) if getattr(p, "is_hr_pass", False) else getattr(p, "scheduler", None)
    return kind in (SCHEDULER_LABEL, SCHEDULER_NAME)


def miss_policy(tail):
    """The core miss policy the settings ask for: auto-distill (a tail only with the tails option), error, stock."""
    if opt("dode_auto_distill") and (not tail or opt("dode_distill_tails")):
        return "auto_distill"
    return "error" if opt("dode_miss_policy") == "error" and not tail else "stock"


def blocker(p):
    """Why no λ can be looked up for this generation, or None."""
    if refiner_active(p):
        return "a refiner switches models mid-schedule; λ is fitted for one model"
    return None if identity(p)[0] is not None else "the checkpoint has no file to hash"


def run(name, model, x, sigmas, extra_args=None, callback=None, disable=None):
    p = getattr(model, "p", None)
    prefix = HIRES_PREFIX if getattr(p, "is_hr_pass", False) else ""
    tail = is_tail(p, model, sigmas)
    cfg = cfg_scale(p, extra_args)
    flow = is_flow(model)
    lambdas, ref, problem = None, "none", blocker(p)
    ident, info = identity(p) if problem is None else (None, None)
    if problem is None:
        lambdas, why = lookup(name, ident, info, sigmas, cfg)
        ref = why if lambdas is not None else ref
    else:
        why = unserved(Request.grid(name, sigmas, None, cfg), problem)
    if lambdas is None:
        action = miss_action(miss_policy(tail), problem)
        if action == "distill":
            schedule = not tail and on_fitted_schedule(p) and bool(opt("dode_fit_schedule"))
            try:
                samples, ref, summary = auto_distill(name, model, x, sigmas, extra_args, disable, ident, info, cfg,
                                                     flow, schedule)
            except ValueError as e:  # a σ grid the fit cannot use (e.g. repeated σ): the stock sampler
                why = f"{why}; auto-distill failed: {e}"
                action = miss_action("error" if opt("dode_miss_policy") == "error" and not tail else "stock")
            else:
                set_info(p, prefix + INFOTEXT_KEY, ref)
                set_info(p, prefix + INFOTEXT_FIT, summary)
                if schedule:
                    set_info(p, prefix + INFOTEXT_SCHEDULE, f"fitted {ref}")
                return samples
        what = f"{label_for(name)} ({'tail' if tail else 'full'} schedule)"
        if action == "error":
            raise RuntimeError(f"D-ODE: {what}: {why}")
        if opt("dode_miss_policy") != "stock sampler, silent":
            log_once((name, tuple(round(float(s), 5) for s in sigmas), cfg, why),
                     "D-ODE: %s, using the stock sampler: %s", what, why)
    set_info(p, prefix + INFOTEXT_KEY, ref)
    return sample(model, x, sigmas, sampler=name, lambdas=lambdas, extra_args=extra_args, callback=callback,
                  disable=disable, flow=flow)


# ---------------------------------------------------------------- the schedule type "D-ODE fitted"

def remember(p):
    """Records the processing object about to sample (the script's ``process_before_every_sampling``, which the
    WebUI calls after creating ``p.sampler`` and before that sampler builds its σ grid), and drops this pass's D-ODE
    infotext left by an earlier generation: the X/Y/Z plot's cells are shallow copies of one ``p`` that share its
    ``extra_generation_params``, so a Karras cell would otherwise report the fitted schedule of the cell before."""
    _current_call["p"] = p
    info = getattr(p, "extra_generation_params", None)
    if info is not None:
        prefix = HIRES_PREFIX if getattr(p, "is_hr_pass", False) else ""
        for key in (INFOTEXT_KEY, INFOTEXT_FIT, INFOTEXT_SCHEDULE):
            info.pop(prefix + key, None)


def current_generation(inner_model):
    """The recorded processing object if it belongs to this schedule call: its sampler's k-diffusion wrapper is the
    ``inner_model`` the WebUI passed (each sampler has its own), else None (e.g. a run without the WebUI's scripts)."""
    p = _current_call["p"]
    if p is None or inner_model is None or getattr(getattr(p, "sampler", None), "model_wrap", None) is not inner_model:
        return None
    return p


def core_sampler(label):
    """The core sampler behind a WebUI sampler label: a D-ODE one (``Euler (D-ODE)``) or its stock twin (``Euler``)."""
    if label is None:
        return None
    stock = {solver.label.lower(): name for name, solver in SOLVERS.items() if solver.label}
    return labels().get(label) or stock.get(label.lower())


def schedule_for(p, steps, sigma_max):
    """(fitted entry, infotext reference) for the generation ``p``, or (None, reason)."""
    label = getattr(getattr(getattr(p, "sampler", None), "config", None), "name", None)
    name = core_sampler(label)
    if name is None:
        return None, f"the sampler {label} has no D-ODE solver to fit a schedule for"
    if refiner_active(p):
        return None, "a refiner switches models mid-schedule; a schedule is fitted for one model"
    ident, info = identity(p)
    if ident is None:
        return None, "the checkpoint has no file to hash"
    return lookup_schedule(name, ident, info, steps, sigma_max, cfg_scale(p, None))


def fitted_schedule(n, sigma_min, sigma_max, inner_model=None, device="cpu", rho=7.0):
    """Schedule type "D-ODE fitted": the σ grid fitted for this checkpoint, sampler, ``n`` steps from ``sigma_max``
    to 0 and CFG scale (models/D-ODE, then the checkpoint's sidecar), else the stock Karras grid on
    [``sigma_min``, ``sigma_max``] with ``rho``. The WebUI's signature (``need_inner_model``); the generation's
    sampler, checkpoint and CFG come from ``current_generation``."""
    from modules import sd_schedulers
    stock = sd_schedulers.schedulers_map[FALLBACK_SCHEDULER]
    p = current_generation(inner_model)
    if p is None:
        entry, found = None, "no generation settings reached the schedule (a run without the WebUI's scripts)"
    else:
        entry, found = schedule_for(p, n, sigma_max)
    key = (HIRES_PREFIX if getattr(p, "is_hr_pass", False) else "") + INFOTEXT_SCHEDULE
    if entry is None:
        set_info(p, key, f"{stock.label} (no fit)")
        log_once(("schedule", n, round(float(sigma_max), 5), found), "D-ODE fitted: using the stock %s schedule: %s",
                 stock.label, found)
        return stock.function(n=n, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, device=device)
    set_info(p, key, f"fitted {found}")
    return entry.sigmas.to(device=device, dtype=torch.float32)


def sampler_function(name):
    """A k-diffusion-style sampler function for the WebUI's KDiffusionSampler.

    Only ``sigmas`` among the keyword names the WebUI injects by signature (no eta/n/sigma_min/sigma_max)."""
    def sample_dode(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return run(name, model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)
    sample_dode.__name__ = sample_dode.__qualname__ = f"sample_dode_{name}"
    return sample_dode
