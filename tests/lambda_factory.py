"""λ entries and hand-written λ files for the λ tests (tests/ is on sys.path: conftest.py)."""
import json

import torch
from safetensors.torch import save_file

import dode
from dode.lambdas import LambdaEntry
from dode.samplers import karras_sigmas


def entry(sampler="euler", steps=5, model="model-a", cfg=7.0, **kw):
    sigmas = karras_sigmas(steps)
    return LambdaEntry(sampler=sampler, sigmas=sigmas, lambdas=torch.linspace(0, 1, dode.nfe(sampler, sigmas)),
                       model=model, cfg=cfg, teacher="heun", scale=10, **kw)


def write_raw(path, tensors, **header):
    """A safetensors file with ``header`` as its metadata (JSON for non-strings; None leaves a field out)."""
    metadata = {k: v if isinstance(v, str) else json.dumps(v) for k, v in header.items() if v is not None}
    save_file(tensors, str(path), metadata=metadata)
    return path


GOOD = {"0.lambdas": torch.zeros(5, dtype=torch.float64), "0.sigmas": karras_sigmas(5).double()}
META = [{"sampler": "euler", "steps": 5}]


def fitted(steps=5, model="model-a", cfg=7.0, sigma_max=80.0, sampler="euler", **kw):
    """A fitted-schedule entry: a grid the fit chose (here a Karras grid with another ρ), first and last σ kept."""
    sigmas = karras_sigmas(steps, sigma_max=sigma_max, rho=3.0)
    return LambdaEntry(sampler=sampler, sigmas=sigmas, lambdas=torch.full((dode.nfe(sampler, sigmas),), 0.25),
                       model=model, cfg=cfg, schedule="fitted", objective="final", **kw)


def write_entry(path, tensors=None, version="1", **meta):
    """A one-entry λ file written by hand: GOOD's tensors (or ``tensors``) and META's fields updated by ``meta``."""
    return write_raw(path, GOOD if tensors is None else tensors, format="dode.lambdas", format_version=version,
                     entries=[{**META[0], **meta}])


def dead_pid():
    import subprocess
    import sys
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
