"""Stub: schedule types (names, labels and aliases of A1111 1.10 plus Forge's extra ones)."""
from dataclasses import dataclass


@dataclass
class Scheduler:
    name: str
    label: str
    function: object = None
    aliases: list = None


schedulers = [Scheduler(n, l, None, a) for n, l, a in [
    ("automatic", "Automatic", None), ("uniform", "Uniform", None), ("karras", "Karras", None),
    ("exponential", "Exponential", None), ("polyexponential", "Polyexponential", None),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"]), ("kl_optimal", "KL Optimal", None),
    ("align_your_steps", "Align Your Steps", None), ("simple", "Simple", None), ("normal", "Normal", None),
    ("ddim", "DDIM", None), ("beta", "Beta", None), ("turbo", "Turbo", None),
    ("align_your_steps_GITS", "AYS GITS", None), ("align_your_steps_11", "AYS 11 steps", None),
    ("align_your_steps_32", "AYS 32 steps", None),
]]
schedulers_map = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}
