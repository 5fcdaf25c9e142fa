"""The pack's HTTP routes on ComfyUI's server (used by web/dode.js): remove one λ entry from a λ file.

``POST /dode/lambdas/remove`` with ``{"file": <λ file name as Load λ lists it>, "id": <entry id>}`` answers
``{"file", "id", "title", "left"}``, or HTTP 400 with ``{"error"}``. ``GET /dode/lambdas`` lists every entry
(``store.entry_rows``). Only files of the λ folders can be touched; the rewrite is the store's atomic, locked one.
"""
import logging

from . import store

log = logging.getLogger("dode")


def remove(body):
    """``(status, payload)`` for a remove request ``body`` (a dict)."""
    if not isinstance(body, dict):
        return 400, {"error": "expected a JSON object with file and id"}
    try:
        return 200, store.remove_entry(body.get("file"), body.get("id"))
    except LookupError as e:
        return 400, {"error": str(e)}
    except Exception as e:  # a broken file, a read-only folder: say so, keep the server up
        log.warning("[dode] could not remove a λ entry (%s: %s)", type(e).__name__, e)
        return 400, {"error": f"could not remove it ({type(e).__name__}); the log says why"}


_registered = set()


def register(server):
    """Adds the routes to ``server.routes`` (ComfyUI's PromptServer, before it starts) once; False without one."""
    routes = getattr(server, "routes", None)
    if routes is None:
        return False
    if id(server) in _registered:
        return True
    _registered.add(id(server))
    from aiohttp import web

    @routes.post("/dode/lambdas/remove")
    async def remove_route(request):
        try:
            body = await request.json()
        except Exception:
            body = None
        status, payload = remove(body)
        return web.json_response(payload, status=status)

    @routes.get("/dode/lambdas")
    async def list_route(request):
        return web.json_response({"rows": store.entry_rows()})

    return True
