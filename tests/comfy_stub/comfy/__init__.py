"""Stub of the ComfyUI ``comfy`` package for the dode adapter tests (see tests/comfy_stub/README.md)."""
