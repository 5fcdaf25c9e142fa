"""Stub: the WebUI's models folder (tests point it at a temporary folder)."""
import os
import tempfile

models_path = os.path.join(tempfile.gettempdir(), "dode-webui-stub-models")
