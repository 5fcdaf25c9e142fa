"""Model identity for the λ store: a fingerprint of a ComfyUI MODEL (ModelPatcher) that is stable across processes.

ComfyUI's MODEL carries no file hash, so the fingerprint is built from what it does carry:

- **base**: the checkpoint file when ComfyUI exposes its path (``ModelPatcher.cached_patcher_init``, newer ComfyUI):
  its size, safetensors header and four 1 MiB chunks. Otherwise the weights of ``diffusion_model``: every tensor's
  name, shape and dtype plus 64 strided values (the pre-patch values where ComfyUI keeps a backup, so a LoRA that is
  already merged into the weights does not leak into the base).
- **patches**: LoRA and other weight patches (key, strengths, adapter type, sampled adapter tensors), unless the
  identity mode ignores them.
- **sampling**: the model_sampling type and parameters (σ range, shift, multiplier, the discrete σ table), so
  ModelSamplingSD3/Flux/Discrete overrides change it.

When the model is exactly its checkpoint file (the path is known, no weight or hook patches, no ``model_sampling``
object patch, i.e. no ModelSampling* node), the identity also carries the file's AutoV2 hash as an alias: the WebUI's
identity for the same checkpoint, so λ files work in both hosts. Hashing a 7 GB file takes seconds, so it never runs
on the generation path: the first call starts it in a background thread (once per file version; memoised, and cached
on disk next to the λ files) and waits at most ALIAS_WAIT for it, enough for a hash that is already cached; until it
is done the identity has no alias and ``alias_pending`` is the job (store.add adds the alias to what it wrote).

Only ``torch`` and the ModelPatcher's attributes are used (no ``comfy`` import), so this module is testable on its
own. Everything is memoised: a lookup after the first costs microseconds to milliseconds.
"""
import hashlib
import json
import logging
import os
import struct
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import torch

from ..lambdas import autov2
from ..lambdas.schema import weights_key

log = logging.getLogger("dode")
VERSION = "dode-fp1"
IDENTITY_MODES = ("full", "ignore_patches")
SAMPLES_PER_TENSOR = 64
CHUNK = 1 << 20
MAX_HEADER = 64 << 20
ALIAS_WAIT = 0.2  # seconds a fingerprint waits for the AutoV2 (a cached hash answers in milliseconds)

_lock = threading.Lock()
_file_memo = {}                                  # (realpath, size, mtime_ns) -> digest
_weights_memo = weakref.WeakKeyDictionary()      # BaseModel -> digest
_patch_memo = {}                                 # patches_uuid -> digest
_sampling_memo = weakref.WeakKeyDictionary()     # model_sampling object -> description
_alias_jobs = {}                                 # (realpath, size, mtime_ns) -> Future of the AutoV2
_hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dode-autov2")


@dataclass(frozen=True)
class ModelIdentity:
    """A model fingerprint. ``key`` is what λ entries store as their ``model``; the rest explains it."""
    key: str
    name: str        # checkpoint file stem, or "model" when ComfyUI does not expose the file
    base: str        # "file:<hex>" or "weights:<hex>"
    patches: str     # "none", "ignored" or "<count>:<hex>"
    sampling: str    # e.g. "ModelSamplingDiscreteFlow+CONST(shift=3, multiplier=1000, σ 0.0029→1)"
    aliases: tuple = ()  # (AutoV2,) when the model is exactly its checkpoint file, else ()
    alias_pending: object = field(default=None, compare=False)  # the AutoV2 job while it runs, else None

    @property
    def ids(self):
        """Every identity a λ entry for this model may carry (lookups accept any of them)."""
        return (self.key, *self.aliases)

    def describe(self):
        aka = f"; AutoV2 {self.aliases[0]}" if self.aliases else ""
        return f"{self.key} ({self.name}; {self.base[:20]}; patches {self.patches[:16]}; {self.sampling}{aka})"

    @property
    def weights(self):
        """The weights alone (base and patches, without the model sampling), as LambdaEntry.weights reads them."""
        return weights_key(self.base, self.patches)

    def as_meta(self):
        return {"model_name": self.name, "model_base": self.base, "model_patches": self.patches,
                "model_sampling": self.sampling}


def fingerprint(patcher, mode="full", hash_cache=None):
    """The identity of a ComfyUI ModelPatcher (memoised on the base model, the patch set and model_sampling).
    ``hash_cache``: the JSON file that keeps checkpoint hashes across restarts (see ``alias_job``)."""
    if mode not in IDENTITY_MODES:
        raise ValueError(f"identity mode must be one of {IDENTITY_MODES}, got {mode!r}")
    path = checkpoint_path(patcher)
    base = f"file:{file_digest(path)}" if path else f"weights:{weights_digest(patcher)}"
    patches = "ignored" if mode == "ignore_patches" else patch_digest(patcher)
    sampling = describe_sampling(patcher)
    payload = json.dumps([VERSION, base, patches, sampling], ensure_ascii=True)
    key = "fp1-" + hashlib.blake2b(payload.encode(), digest_size=12).hexdigest()
    name = os.path.splitext(os.path.basename(path))[0] if path else "model"
    job = alias_job(path, hash_cache) if is_bare_checkpoint(patcher, path) else None
    alias = job_result(job)
    return ModelIdentity(key=key, name=name, base=base, patches=patches, sampling=sampling,
                         aliases=(alias,) if alias else (), alias_pending=job if job and not alias else None)


def is_bare_checkpoint(patcher, path):
    """True if the model is exactly the checkpoint file ``path``: no weight or hook patches, model_sampling not
    replaced by an object patch (as every ModelSampling* node does)."""
    object_patches = getattr(patcher, "object_patches", None)
    return bool(path) and isinstance(object_patches, dict) and "model_sampling" not in object_patches and \
        not getattr(patcher, "patches", None) and not getattr(patcher, "hook_patches", None)


def alias_job(path, hash_cache=None):
    """The background job computing ``path``'s AutoV2, started on first use (one per file version)."""
    stat = os.stat(path)
    memo_key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        job = _alias_jobs.get(memo_key)
        fresh = job is None
        if fresh:
            job = _alias_jobs[memo_key] = _hasher.submit(autov2, path, hash_cache)
    if fresh:
        wait([job], timeout=ALIAS_WAIT)  # a cached hash is back by then; a real hash goes on in the background
    return job


def job_result(job):
    """The AutoV2 if ``job`` is done, else None (still hashing, or failed: then the model has no alias)."""
    if job is None or not job.done():
        return None
    try:
        return job.result()
    except Exception as e:
        log.warning("[dode] no AutoV2 alias for this checkpoint (%s: %s)", type(e).__name__, e)
        return None


def checkpoint_path(patcher):
    """The checkpoint file the model was loaded from, if ComfyUI recorded it (``cached_patcher_init``), else None."""
    init = getattr(patcher, "cached_patcher_init", None)
    try:
        path = init[1][0]
    except (TypeError, IndexError, KeyError):
        return None
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
        return os.fspath(path)
    return None


def file_digest(path):
    """Size + safetensors header + four 1 MiB chunks at fixed fractions of the file (memoised on size and mtime)."""
    stat = os.stat(path)
    memo_key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if memo_key in _file_memo:
            return _file_memo[memo_key]
    h = hashlib.blake2b(digest_size=16)
    size = stat.st_size
    h.update(struct.pack("<Q", size))
    with open(path, "rb") as f:
        head = f.read(8)
        h.update(head)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if 0 < n <= min(MAX_HEADER, size - 8):  # a safetensors file: hash its whole JSON header
                h.update(f.read(n))
        for frac in (0.0, 0.25, 0.5, 0.75):
            f.seek(int(max(0, size - CHUNK) * frac))
            h.update(f.read(CHUNK))
        f.seek(max(0, size - CHUNK))
        h.update(f.read(CHUNK))
    digest = h.hexdigest()
    with _lock:
        _file_memo[memo_key] = digest
    return digest


def _plain(t):
    return torch.is_tensor(t) and type(t) in (torch.Tensor, torch.nn.Parameter) and not t.is_meta


def _sample(t, h):
    """Feeds shape, dtype and SAMPLES_PER_TENSOR strided values of ``t`` (as float32) into the hash ``h``."""
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    if not _plain(t) or t.numel() == 0:
        h.update(b"shape-only")
        return
    flat = t.detach().reshape(-1)
    step = max(1, flat.numel() // SAMPLES_PER_TENSOR)
    values = flat[::step][:SAMPLES_PER_TENSOR].to("cpu", torch.float32)
    h.update(values.numpy().tobytes())


def weights_digest(patcher):
    """Sampled weights of ``diffusion_model`` (pre-patch values where a backup exists); memoised per base model."""
    base_model = patcher.model
    with _lock:
        cached = _weights_memo.get(base_model)
    if cached is not None:
        return cached
    backup = getattr(patcher, "backup", None) or {}
    h = hashlib.blake2b(digest_size=16)
    state = base_model.state_dict(keep_vars=True)
    for key in sorted(k for k in state if k.startswith("diffusion_model.")):
        t = state[key]
        if key in backup:
            t = getattr(backup[key], "weight", t)
        h.update(key.encode())
        _sample(t, h)
    digest = h.hexdigest()
    with _lock:
        _weights_memo[base_model] = digest
    return digest


def _walk_patch(obj, h, depth=0):
    if depth > 6:
        return
    if torch.is_tensor(obj):
        _sample(obj, h)
    elif isinstance(obj, (tuple, list)):
        h.update(f"seq{len(obj)}|".encode())
        for item in obj:
            _walk_patch(item, h, depth + 1)
    elif isinstance(obj, (str, int, float, bool)) or obj is None:
        h.update(repr(obj).encode())
    else:
        h.update(type(obj).__name__.encode())
        weights = getattr(obj, "weights", None)
        if weights is not None:
            _walk_patch(weights, h, depth + 1)


def patch_digest(patcher):
    """The weight patches (LoRA etc.) as ``"<count>:<hex>"``, or ``"none"``; memoised on ``patches_uuid``."""
    patches = getattr(patcher, "patches", None) or {}
    if not patches:
        return "none"
    memo_key = getattr(patcher, "patches_uuid", None)
    with _lock:
        if memo_key is not None and memo_key in _patch_memo:
            return _patch_memo[memo_key]
    h = hashlib.blake2b(digest_size=16)
    count = 0
    for key in sorted(patches):
        for patch in patches[key]:
            strength_patch, adapter, strength_model, offset, function = (tuple(patch) + (None,) * 5)[:5]
            h.update(f"{key}|{float(strength_patch)!r}|{float(strength_model)!r}|{offset!r}|"
                     f"{getattr(function, '__qualname__', function)!r}|".encode())
            _walk_patch(adapter, h)
            count += 1
    digest = f"{count}:{h.hexdigest()}"
    with _lock:
        if memo_key is not None:
            if len(_patch_memo) > 256:
                _patch_memo.clear()
            _patch_memo[memo_key] = digest
    return digest


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def describe_sampling(patcher):
    """model_sampling's class family (ComfyUI's own classes, not per-load wrapper classes) and parameters."""
    try:
        ms = patcher.get_model_object("model_sampling")
    except Exception:
        ms = getattr(getattr(patcher, "model", None), "model_sampling", None)
    if ms is None:
        return "unknown"
    try:
        with _lock:
            cached = _sampling_memo.get(ms)
    except TypeError:  # not weak-referenceable
        cached = None
    if cached is not None:
        return cached
    family = [c.__name__ for c in type(ms).__mro__ if c.__module__.endswith("model_sampling")] or \
        [type(ms).__name__]
    params = []
    for attr in ("shift", "multiplier", "sigma_data"):
        value = _float(getattr(ms, attr, None))
        if value is not None:
            params.append(f"{attr}={value:.6g}")
    lo, hi = _float(getattr(ms, "sigma_min", None)), _float(getattr(ms, "sigma_max", None))
    if lo is not None and hi is not None:
        params.append(f"σ {lo:.6g}→{hi:.6g}")
    table = getattr(ms, "sigmas", None)
    if torch.is_tensor(table) and table.numel() > 0:
        values = table.detach().to("cpu", torch.float64).flatten().tolist()
        text = ",".join(f"{v:.6g}" for v in values)
        params.append("table " + hashlib.blake2b(text.encode(), digest_size=6).hexdigest())
    model_type = getattr(getattr(getattr(patcher, "model", None), "model_type", None), "name", None)
    if model_type:
        params.append(f"type={model_type}")
    text = f"{'+'.join(family)}({', '.join(params)})"
    try:
        with _lock:
            _sampling_memo[ms] = text
    except TypeError:
        pass
    return text
