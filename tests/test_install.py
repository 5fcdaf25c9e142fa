"""install.py: the WebUI start-up hook installs only what is missing, never torch."""
import importlib.util
import os
import subprocess
import sys

from webui_host import ROOT


def test_install_py_installs_only_what_is_missing():
    spec = importlib.util.spec_from_file_location("dode_install_probe", os.path.join(ROOT, "install.py"))
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)  # no WebUI `launch` module here: nothing happens
    assert install.launch is None and install.main() == []
    assert install.missing(is_installed=lambda m: m != "tqdm") == ["tqdm"]
    assert not any("torch" in r for r in install.REQUIREMENTS.values())
    out = subprocess.run([sys.executable, os.path.join(ROOT, "install.py")], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == ""
