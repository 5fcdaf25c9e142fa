"""Stub of comfy.model_patcher.ModelPatcher (the attributes the dode pack reads)."""
import copy
import uuid

import torch


class ModelPatcher:
    def __init__(self, model, load_device=torch.device("cpu"), offload_device=torch.device("cpu")):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.patches_uuid = uuid.uuid4()
        self.cached_patcher_init = None  # newer ComfyUI: (loader, (path, ...)[, index])

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device)
        n.patches = {k: v[:] for k, v in self.patches.items()}
        n.patches_uuid = self.patches_uuid
        n.backup = self.backup
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.cached_patcher_init = self.cached_patcher_init
        return n

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        state = self.model.state_dict()
        added = []
        for key, patch in patches.items():
            if key in state:
                self.patches.setdefault(key, []).append((strength_patch, patch, strength_model, None, None))
                added.append(key)
        self.patches_uuid = uuid.uuid4()
        return added

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def get_model_object(self, name):
        if name in self.object_patches:
            return self.object_patches[name]
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def model_dtype(self):
        return torch.float32
