"""Stub: the checkpoint list (title -> info) and aliases (id -> info), rebuilt by list_models() from the folder scan
(modelloader.load_models, as A1111's list_models does); ``opened`` records the files whose header it read."""
from types import SimpleNamespace

from . import modelloader

checkpoints_list = {}
checkpoint_aliases = {}
model_data = SimpleNamespace(sd_model=None)  # the loaded model (A1111's shared.sd_model loads one when it is None)
models_files = modelloader.found  # tests set the files the "folder scan" finds
opened = []


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    for filename in modelloader.load_models(model_path="/m", ext_filter=[".ckpt", ".safetensors"],
                                            ext_blacklist=[".vae.ckpt", ".vae.safetensors"]):
        opened.append(filename)  # A1111 reads a .safetensors header here: a damaged one prints a traceback
        name = filename.rsplit("/", 1)[-1]
        info = SimpleNamespace(filename=filename, title=name, ids=[name, name.rsplit(".", 1)[0]])
        checkpoints_list[info.title] = info
        for i in info.ids:
            checkpoint_aliases[i] = info
