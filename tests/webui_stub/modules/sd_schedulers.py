"""Stub: schedule types (names, labels and aliases of A1111 1.10 plus Forge's extra ones), the Scheduler dataclass
with A1111's fields, and a Karras schedule (the formula of Karras et al. 2022, eq. 5) for the "karras" type."""
from dataclasses import dataclass

import torch


@dataclass
class Scheduler:
    name: str
    label: str
    function: object
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


def karras(n, sigma_min, sigma_max, rho=7.0, device="cpu"):
    ramp = torch.linspace(0, 1, n)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])]).to(device)


schedulers = [Scheduler(n, l, f, rho, aliases=a) for n, l, f, rho, a in [
    ("automatic", "Automatic", None, -1, None), ("uniform", "Uniform", None, -1, None),
    ("karras", "Karras", karras, 7.0, None), ("exponential", "Exponential", None, -1, None),
    ("polyexponential", "Polyexponential", None, 1.0, None), ("sgm_uniform", "SGM Uniform", None, -1, ["SGMUniform"]),
    ("kl_optimal", "KL Optimal", None, -1, None), ("align_your_steps", "Align Your Steps", None, -1, None),
    ("simple", "Simple", None, -1, None), ("normal", "Normal", None, -1, None), ("ddim", "DDIM", None, -1, None),
    ("beta", "Beta", None, -1, None), ("turbo", "Turbo", None, -1, None),
    ("align_your_steps_GITS", "AYS GITS", None, -1, None), ("align_your_steps_11", "AYS 11 steps", None, -1, None),
    ("align_your_steps_32", "AYS 32 steps", None, -1, None),
]]
schedulers_map = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}
