"""Stub of comfy.model_management: devices and interruption."""
import torch


class InterruptProcessingException(Exception):
    pass


_interrupted = False


def interrupt_current_processing(value=True):
    global _interrupted
    _interrupted = value


def processing_interrupted():
    return _interrupted


def throw_exception_if_processing_interrupted():
    global _interrupted
    if _interrupted:
        _interrupted = False
        raise InterruptProcessingException()


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")
