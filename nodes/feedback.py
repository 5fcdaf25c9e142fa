"""What the pack tells the user: one line in ComfyUI's log and the same line in the browser.

The browser part is a websocket message ``dode.status`` (``{"text", "level", "node", "toast"}``: ``toast`` is the
one short line the toast shows, ``text`` the whole log line) sent with ComfyUI's own
``PromptServer.instance.send_sync`` to the client that queued the prompt (to every client when the prompt came
without a client id); the pack's frontend extension (``web/dode.js``) shows it as a toast. Without a server (the
tests, a script) only the log line is written.
"""
import logging
import threading

log = logging.getLogger("dode")

EVENT = "dode.status"
LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_told = set()
_lock = threading.Lock()


def prompt_server():
    """ComfyUI's running PromptServer, or None (no server module, or not started)."""
    try:
        import server
    except ImportError:
        return None
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def tell(text, level="info", node=None, toast=None):
    """Logs ``text`` (prefixed ``[dode]``) and sends it to the browser as a ``dode.status`` message; the toast shows
    ``toast`` (one short line, no internals) where given, else ``text``."""
    log.log(LEVELS[level], "[dode] %s", text)
    instance = prompt_server()
    if instance is None:
        return
    if node is None:
        node = getattr(instance, "last_node_id", None)
    data = {"text": text, "level": level, "node": node, "toast": toast or text}
    try:
        instance.send_sync(EVENT, data, getattr(instance, "client_id", None))
    except Exception as e:  # the log line is written; a UI problem must never stop sampling
        log.debug("[dode] could not send a status message to the browser (%s: %s)", type(e).__name__, e)


def tell_once(key, text, level="info", node=None, toast=None):
    """``tell`` the first time ``key`` is seen in this process; later calls only log at debug level."""
    with _lock:
        first = key not in _told
        _told.add(key)
    if first:
        tell(text, level, node, toast)
    else:
        log.debug("[dode] %s", text)
    return first


