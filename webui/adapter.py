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
"""
import hashlib
import json
import logging
import os

import torch

from ..lambdas import DEFAULT_SCALE, DEFAULT_TEACHER, LambdaNotFound, LambdaStore, autov2, distill, find_lambdas
from ..samplers import SAMPLER_NAMES, SOLVERS, nfe, sample

log = logging.getLogger("dode.webui")

LABEL_SUFFIX = " (D-ODE)"  # ends in ")", so the WebUI never splits a scheduler name off the label
INFOTEXT_KEY = "D-ODE λ"
INFOTEXT_FIT = "D-ODE fit"
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
    "dode_miss_policy": MISS_POLICIES[0],
}
STOCK_OPTION_KEYS = ("scheduler",)  # options copied from the stock WebUI sampler of the same label

_stores = {}
_logged = set()


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


def bare_checkpoint_entries(entries):
    """Entries fitted on a bare checkpoint: no extra networks (WebUI) and no weight patches recorded (ComfyUI)."""
    return [e for e in entries if "+nets-" not in e.model and e.metrics.get("model_patches", "none") == "none"]


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


def lookup(name, ident, info, sigmas, cfg):
    """(λ tensor, infotext reference) or (None, reason)."""
    folder = store_for([lambda_dir()])
    entry, where = folder.lookup(ident, name, sigmas, cfg=cfg)
    if entry is not None:
        return entry.lambdas, entry_ref(folder, where, entry)
    reasons = [where]
    side = sidecar(info)
    if side and os.path.isfile(side):
        store = store_for(files=[side])
        entry, why = store.lookup(ident, name, sigmas, cfg=cfg)
        if entry is None and "+nets-" not in ident:
            # the sidecar's place names the checkpoint: accept another host's identity for a bare-checkpoint fit
            try:
                entry = find_lambdas(bare_checkpoint_entries(store.entries(side)), name, sigmas, cfg=cfg, source=side)
            except LambdaNotFound as e:
                why = str(e)
        if entry is not None:
            return entry.lambdas, entry_ref(store, side, entry)
        reasons.append(why)
        reasons += [f"{k}: {v}" for k, v in store.problems.items()]
    reasons += [f"{k}: {v}" for k, v in folder.problems.items()]
    return None, "; ".join(reasons)


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


def auto_distill(name, model, x, sigmas, extra_args, disable, ident, info, cfg, flow=False):
    """Fits λ on this batch, saves it to models/D-ODE, and returns (samples, reference, fit summary)."""
    from modules import shared
    teacher = opt("dode_teacher")
    if teacher not in SAMPLER_NAMES:
        log_once(("teacher", teacher), "D-ODE: unknown teacher %r in the settings; using %s", teacher, DEFAULT_TEACHER)
        teacher = DEFAULT_TEACHER
    scale = max(1, int(opt("dode_scale")))
    state = getattr(shared, "state", None)

    def progress(d):
        if state is not None:
            state.textinfo = f"D-ODE: fitting λ ({d['phase']} {d['i'] + 1}/{d['total']})"

    step0 = getattr(model, "step", None)
    try:
        fit = distill(pinned(model, sigmas), x, sigmas, sampler=name, teacher=teacher, scale=scale,
                      extra_args=extra_args, callback=progress, disable=disable, flow=flow)
    finally:
        if step0 is not None:
            model.step = step0 + nfe(name, sigmas)
    entry = fit.entry(model=ident, cfg=cfg, host="webui", checkpoint=getattr(info, "title", None) or "")
    path = distill_file(info, ident)
    store = store_for([lambda_dir()])
    store.add(path, entry)
    r = fit.report
    summary = f"{teacher} x{scale}, rmse {r.rmse_before:.4g} -> {r.rmse_after:.4g}, {r.seconds:.1f} s"
    log.info("D-ODE: distilled λ for %s into %s (%s)", entry.describe(), path, summary)
    return fit.samples, entry_ref(store, path, entry), summary


def run(name, model, x, sigmas, extra_args=None, callback=None, disable=None):
    p = getattr(model, "p", None)
    prefix = HIRES_PREFIX if getattr(p, "is_hr_pass", False) else ""
    tail = is_tail(p, model, sigmas)
    cfg = cfg_scale(p, extra_args)
    flow = is_flow(model)
    lambdas, ref, why = None, "none", None
    if refiner_active(p):
        why = "a refiner switches models mid-schedule; λ is fitted for one model"
    else:
        ident, info = identity(p)
        if ident is None:
            why = "the checkpoint has no file to hash"
        else:
            lambdas, found = lookup(name, ident, info, sigmas, cfg)
            if lambdas is not None:
                ref = found
            elif opt("dode_auto_distill") and (not tail or opt("dode_distill_tails")):
                try:
                    samples, ref, summary = auto_distill(name, model, x, sigmas, extra_args, disable, ident, info,
                                                         cfg, flow)
                except ValueError as e:  # a σ grid the fit cannot use (e.g. repeated σ): stock sampler
                    why = f"auto-distill failed: {e}"
                else:
                    set_info(p, prefix + INFOTEXT_KEY, ref)
                    set_info(p, prefix + INFOTEXT_FIT, summary)
                    return samples
            else:
                why = found
    if lambdas is None:
        policy = opt("dode_miss_policy")
        what = f"{label_for(name)}, {len(sigmas) - 1} steps, {'tail' if tail else 'full'} schedule, cfg {cfg}"
        if policy == "error" and not tail:
            raise RuntimeError(f"D-ODE: no λ for {what}: {why}")
        if policy != "stock sampler, silent":
            key = (name, tuple(round(float(s), 5) for s in sigmas), cfg, why)
            log_once(key, "D-ODE: no λ for %s, using the stock sampler: %s", what, why)
    set_info(p, prefix + INFOTEXT_KEY, ref)
    return sample(model, x, sigmas, sampler=name, lambdas=lambdas, extra_args=extra_args, callback=callback,
                  disable=disable, flow=flow)


def sampler_function(name):
    """A k-diffusion-style sampler function for the WebUI's KDiffusionSampler.

    Only ``sigmas`` among the keyword names the WebUI injects by signature (no eta/n/sigma_min/sigma_max)."""
    def sample_dode(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return run(name, model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)
    sample_dode.__name__ = sample_dode.__qualname__ = f"sample_dode_{name}"
    return sample_dode
