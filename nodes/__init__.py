"""ComfyUI adapter: ``<name>_dode`` in the stock sampler dropdowns, the ``dode`` scheduler, the λ folder, the D-ODE
nodes, and the frontend extension in ``web/`` (the pack's WEB_DIRECTORY).

Importing this package (ComfyUI does, through the pack's root ``__init__.py``) registers everything once. Each part
is guarded: if something is missing in this ComfyUI, it logs one line saying what and keeps ComfyUI running.
"""
import logging

log = logging.getLogger("dode")

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
REGISTERED_SAMPLERS = []
REGISTERED_SCHEDULERS = []
PROBLEMS = []


def setup():
    """Registers the λ folder, the dropdown samplers and the nodes; safe to call again (idempotent)."""
    try:
        from .store import register_folder
        register_folder()
    except Exception as e:
        PROBLEMS.append(f"λ folder: {e}")
        log.warning("[dode] could not register models/dode_lambdas with folder_paths (%s: %s); λ files cannot be "
                    "stored", type(e).__name__, e, exc_info=True)
    try:
        from .sampling import register_samplers
        REGISTERED_SAMPLERS[:] = register_samplers()
    except Exception as e:
        PROBLEMS.append(f"samplers: {e}")
        log.warning("[dode] could not add the D-ODE samplers to the KSampler dropdown (%s: %s)", type(e).__name__, e,
                    exc_info=True)
    try:
        from .schedule import register_scheduler
        REGISTERED_SCHEDULERS[:] = [name for name in (register_scheduler(),) if name]
    except Exception as e:
        PROBLEMS.append(f"scheduler: {e}")
        log.warning("[dode] could not add the dode scheduler to the scheduler lists (%s: %s)", type(e).__name__, e,
                    exc_info=True)
    try:
        from .v3 import NODES
        for node in NODES:
            schema = node.define_schema()
            NODE_CLASS_MAPPINGS[schema.node_id] = node
            NODE_DISPLAY_NAME_MAPPINGS[schema.node_id] = schema.display_name
    except Exception as e:
        PROBLEMS.append(f"nodes: {e}")
        log.warning("[dode] the D-ODE nodes are unavailable (%s: %s); they need ComfyUI's V3 node API "
                    "(comfy_api.latest, ComfyUI ≥ 0.3.60). The *_dode samplers in the KSampler dropdown still work.",
                    type(e).__name__, e, exc_info=True)
    try:
        from . import routes
        from .feedback import prompt_server
        server = prompt_server()
        if server is not None:
            routes.register(server)
    except Exception as e:
        PROBLEMS.append(f"routes: {e}")
        log.warning("[dode] the λ Files node cannot remove entries from the browser (%s: %s)", type(e).__name__, e)
    if REGISTERED_SAMPLERS or NODE_CLASS_MAPPINGS:
        log.info("[dode] D-ODE: samplers %s, %d nodes (sampling/dode), scheduler %s",
                 ", ".join(REGISTERED_SAMPLERS) or "none", len(NODE_CLASS_MAPPINGS),
                 ", ".join(REGISTERED_SCHEDULERS) or "none")


setup()
