"""Shared fixtures: one torch thread, the k-diffusion oracle, the exact denoisers; tests/ on sys.path for the
helper modules (lambda_factory) and the host plugins (comfy_host, webui_host: the stub hosts' fixtures)."""
import importlib
import importlib.util
import os
import sys
import types

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

pytest_plugins = ["comfy_host", "webui_host"]


def load_kdiffusion_sampling():
    """Imports k_diffusion.sampling (PyPI 0.1.1.post1, installed --no-deps) without the package __init__, which
    imports torchvision, CLIP and friends; torchvision is stubbed when it is absent or broken."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        pytest.skip("k-diffusion oracle not installed (.ci/run installs it)")
    for module in ("scipy", "torchdiffeq", "torchsde", "PIL"):  # what k_diffusion.sampling imports, beyond torch
        pytest.importorskip(module, reason=f"the k-diffusion oracle needs {module} (pip install -e '.[test]')")
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__ = spec
    sys.modules["k_diffusion"] = pkg
    try:
        import torchvision.transforms.functional  # noqa: F401
    except Exception:
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
        tv, tr, fn = (types.ModuleType(n) for n in names)
        tv.transforms, tr.functional = tr, fn
        sys.modules.update(dict(zip(names, (tv, tr, fn))))
    return importlib.import_module("k_diffusion.sampling")


@pytest.fixture(scope="session")
def kd():
    return load_kdiffusion_sampling()


@pytest.fixture(scope="session")
def gmm():
    from dode.lab.testbed.denoisers import make_gmm
    return make_gmm(dim=64, k=8, seed=0)


@pytest.fixture(scope="session")
def digits_model():
    from dode.lab.testbed.tiny_model import load_tiny_model
    return load_tiny_model()

