"""WebUI (A1111 / Forge / reForge) installer hook: installs only what the host lacks.

The WebUI runs this file in a subprocess at every start (not with --skip-install / --skip-prepare-environment). The
D-ODE core needs torch (always present in a WebUI, never installed from here), safetensors and tqdm; the WebUIs ship
both, so normally nothing is installed. ComfyUI-Manager also runs an ``install.py`` it finds in a custom-node folder:
without the WebUI's ``launch`` module this file does nothing there (ComfyUI installs from pyproject/requirements).
"""
try:
    import launch
except ImportError:
    launch = None

# module name -> pip requirement; none of these depends on torch
REQUIREMENTS = {"safetensors": "safetensors", "tqdm": "tqdm"}


def missing(requirements=REQUIREMENTS, is_installed=None):
    is_installed = is_installed or launch.is_installed
    return [req for module, req in requirements.items() if not is_installed(module)]


def main():
    if launch is None:
        return []
    todo = missing()
    for req in todo:
        launch.run_pip(f'install "{req}"', f"D-ODE requirement: {req}")
    return todo


if __name__ == "__main__":
    main()
