"""Stub of comfy_api.latest._io: V3 schema, typed inputs/outputs and NodeOutput.

The input classes accept exactly the keyword arguments of the real ones (v0.3.6x ∩ mainline), so a node that passes an
argument ComfyUI does not know fails here too."""
from dataclasses import dataclass, field
from enum import Enum

_COMMON = ("display_name", "optional", "tooltip", "lazy")
_WIDGET = _COMMON + ("default", "socketless", "force_input")


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"


class _Input:
    allowed = _COMMON

    def __init__(self, id, **kwargs):
        unknown = set(kwargs) - set(self.allowed)
        if unknown:
            raise TypeError(f"{type(self).__qualname__}() got unexpected keyword arguments {sorted(unknown)}")
        self.id = id
        self.optional = kwargs.pop("optional", False)
        self.default = kwargs.get("default")
        self.kwargs = kwargs


class _Output:
    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list


def _type(io_type, input_allowed=_COMMON, extra=None):
    class Input(_Input):
        allowed = input_allowed

    Input.io_type = io_type
    Output = type("Output", (_Output,), {"io_type": io_type})
    namespace = {"io_type": io_type, "Input": Input, "Output": Output, **(extra or {})}
    return type(io_type.title(), (), namespace)


def Custom(io_type):
    return _type(io_type)


Model = _type("MODEL")
Conditioning = _type("CONDITIONING")
Latent = _type("LATENT")
Sampler = _type("SAMPLER")
Sigmas = _type("SIGMAS")
Guider = _type("GUIDER")
Image = _type("IMAGE")
Boolean = _type("BOOLEAN", _WIDGET + ("label_on", "label_off"))
Int = _type("INT", _WIDGET + ("min", "max", "step", "control_after_generate", "display_mode"))
Float = _type("FLOAT", _WIDGET + ("min", "max", "step", "round", "display_mode"))
String = _type("STRING", _WIDGET + ("multiline", "placeholder", "dynamic_prompts"))


class _ComboInput(_Input):
    allowed = _COMMON + ("default", "control_after_generate", "upload", "image_folder", "remote", "socketless")
    io_type = "COMBO"

    def __init__(self, id, options=None, **kwargs):
        super().__init__(id, **kwargs)
        self.options = options


Combo = type("Combo", (), {"io_type": "COMBO", "Input": _ComboInput,
                           "Output": type("Output", (_Output,), {"io_type": "COMBO"})})


@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False

    def validate(self):
        ids = [i.id for i in self.inputs]
        if len(ids) != len(set(ids)):
            raise ValueError(f"{self.node_id}: duplicate input ids {ids}")
        for i in self.inputs:
            if isinstance(i, _ComboInput) and i.default is not None and i.default not in (i.options or []):
                raise ValueError(f"{self.node_id}: default {i.default!r} of {i.id} is not an option")


class NodeOutput:
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args = args
        self.ui = ui


class ComfyNode:
    @classmethod
    def define_schema(cls):
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs):
        return True

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return None
