"""Stub: the checkpoint list (title -> info) and aliases (id -> info), rebuilt by list_models() from models_files."""
from types import SimpleNamespace

checkpoints_list = {}
checkpoint_aliases = {}
models_files = []  # tests set the files the "folder scan" finds


def list_models():
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    for filename in models_files:
        name = filename.rsplit("/", 1)[-1]
        info = SimpleNamespace(filename=filename, title=name, ids=[name, name.rsplit(".", 1)[0]])
        checkpoints_list[info.title] = info
        for i in info.ids:
            checkpoint_aliases[i] = info
