"""nodes/__init__.py: the root package sets the pack up inside ComfyUI only, guarded."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from comfy_host import STUB


ROOT_BLOCK = """
import sys
sys.path.insert(0, {stub!r})
{extra}
import folder_paths, comfy, comfy.samplers
import dode
print("MAPPINGS", sorted(getattr(dode, "NODE_CLASS_MAPPINGS", {{"absent": 1}})))
print("NAMES", [n for n in comfy.samplers.SAMPLER_NAMES if n.endswith("_dode")])
print("SCHEDULERS", [n for n in comfy.samplers.SCHEDULER_NAMES if n == "dode"])
print("WEB", getattr(dode, "WEB_DIRECTORY", None))
"""


def run_python(code, tmp_path):
    env = {**os.environ, "DODE_STUB_COMFY_BASE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120, cwd=str(tmp_path))


def dode_root():
    import dode
    return os.path.dirname(dode.__file__)


def test_root_package_registers_inside_comfyui(tmp_path):
    out = run_python(ROOT_BLOCK.format(stub=STUB, extra=""), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "MAPPINGS ['DODEDistillLambdas', 'DODELambdaFiles', 'DODELoadLambdas', 'DODEModelOptions', 'DODESampler', " \
           "'DODESaveLambdas']" in out.stdout
    assert "'euler_dode'" in out.stdout and "SCHEDULERS ['dode']" in out.stdout and "WEB ./web" in out.stdout
    assert (Path(dode_root()) / "web" / "dode.js").is_file()


def test_missing_v3_api_keeps_comfyui_and_the_dropdown_working(tmp_path):
    out = run_python(ROOT_BLOCK.format(stub=STUB, extra="sys.modules['comfy_api'] = None"), tmp_path)
    assert out.returncode == 0, out.stderr
    assert "MAPPINGS []" in out.stdout and "'euler_dode'" in out.stdout and "SCHEDULERS ['dode']" in out.stdout
    assert "the D-ODE nodes are unavailable" in out.stderr


def test_library_import_does_not_touch_comfy(tmp_path):
    out = run_python("import sys, dode\nprint('COMFY', 'comfy' in sys.modules, hasattr(dode, 'NODE_CLASS_MAPPINGS'))",
                     tmp_path)
    assert out.returncode == 0, out.stderr
    assert "COMFY False False" in out.stdout
