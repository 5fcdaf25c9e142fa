"""Stub: SamplerData as in the WebUI (a namedtuple with total_steps)."""
from collections import namedtuple

SamplerDataTuple = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    def total_steps(self, steps):
        return steps * 2 if self.options.get("second_order", False) else steps


class InterruptedException(BaseException):
    pass
