"""Stub of comfy_api.latest: the V3 node API (``io``) as far as the dode pack uses it."""
from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    @abstractmethod
    async def get_node_list(self):
        ...


__all__ = ["io", "ComfyExtension"]
