"""What a generation tells the user: its infotext entries and one log line per combination."""
import logging

from .names import HIRES_PREFIX

log = logging.getLogger("dode.webui")
_logged = set()


def prefix(p):
    """``Hires `` for the Hires pass (its own infotext keys), else nothing."""
    return HIRES_PREFIX if getattr(p, "is_hr_pass", False) else ""


def set_info(p, key, value):
    """Sets infotext ``key`` of the generation ``p`` (if it has infotext)."""
    if p is not None and getattr(p, "extra_generation_params", None) is not None:
        p.extra_generation_params[key] = value


def log_once(key, message, *args):
    """Logs a warning the first time ``key`` is seen in this process."""
    if key not in _logged:
        _logged.add(key)
        log.warning(message, *args)


def tell_user(p, text):
    """Shows ``text`` under the generation's images (the WebUI's comments, beside the infotext)."""
    comment = getattr(p, "comment", None)
    if callable(comment):
        comment(text)
