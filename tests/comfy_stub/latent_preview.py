"""Stub of latent_preview: ``get_previewer(device, latent_format)`` gives None while previews are off (ComfyUI's
default, ``--preview-method none``), else a previewer whose ``decode_latent_to_preview_image(format, x0)`` returns
``(format, PIL image of the first sample, max size)`` as ComfyUI's Latent2RGB previewer does."""
from PIL import Image

PREVIEW_METHOD = "none"  # the tests set "latent2rgb" to turn previews on
MAX_PREVIEW_RESOLUTION = 512


class Latent2RGBPreviewer:
    def __init__(self):
        self.calls = 0

    def decode_latent_to_preview_image(self, preview_format, x0):
        self.calls += 1
        rgb = x0[0, :3].movedim(0, -1)
        ubyte = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to("cpu").byte()
        return preview_format, Image.fromarray(ubyte.numpy()), MAX_PREVIEW_RESOLUTION


def get_previewer(device, latent_format):
    return None if PREVIEW_METHOD == "none" else Latent2RGBPreviewer()
