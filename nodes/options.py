"""The values the D-ODE nodes pass along: a λ set (DODE_LAMBDAS) and the options a MODEL carries."""
from dataclasses import dataclass

from .. import lambdas as core_lambdas
from ..lambdas.resolve import POLICIES
from .identity import IDENTITY_MODES

MODEL_OPTIONS_KEY = "dode"
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
        if self.identity not in IDENTITY_MODES:
            raise ValueError(f"identity must be one of {IDENTITY_MODES}, got {self.identity!r}")

    def __deepcopy__(self, memo):
        return self


def dode_name(name):
    return name + SUFFIX
