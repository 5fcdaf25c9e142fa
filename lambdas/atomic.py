"""Atomic writes: a temp file in the destination's folder, then os.replace; stale temps of killed writers removed."""
import errno
import os
import re
import secrets
import socket
import time
from contextlib import suppress

STALE_TEMP_SECONDS = 3600  # a temp file of ours this old belongs to a writer that will never finish
TEMP_NAME = re.compile(r"\.dode-(?:(\d{1,10})@([A-Za-z0-9]*)\.)?[^/\\]*\.tmp\Z")  # older dode: .dode-<random>.tmp


def write_bytes(path, data):
    """Writes ``data`` into the existing file ``path`` (keeping its mode) and flushes it to disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomically(path, write):
    """Runs ``write(tmp)`` on a new temp file in ``path``'s folder, then os.replace: readers see the old file or the
    new one, never a partial one, and a failed write leaves no temp file. The temp file is created with mode 0666, so
    the process umask (and the folder's default ACL) gives it the usual permissions without the umask being changed
    (which would race with other threads). Stale temp files of killed writers in that folder are deleted first."""
    folder = prepare_folder(path)
    clean_stale_temps(folder)
    tmp = create_temp(folder, path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def prepare_folder(path):
    """Creates ``path``'s folder if needed and returns it, or an OSError that names the real obstacle."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise NotADirectoryError(f"cannot save {path}: {blocking_file(folder)} is a file, not a folder; choose a "
                                 "path inside a folder or move that file away") from e
    except PermissionError as e:
        raise PermissionError(f"cannot save {path}: no permission to create the folder {folder}; create it or "
                              "choose a writable folder") from e
    if not os.access(folder, os.W_OK):
        raise read_only(path, folder)
    return folder


def read_only(path, folder):
    return PermissionError(f"cannot save {path}: the folder {folder} is read-only; choose a writable folder or fix "
                           "its permissions")


def blocking_file(folder):
    """The nearest of ``folder`` and its parents that exists but is not a folder."""
    while not os.path.isdir(folder) and not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def create_temp(folder, path):
    """A new empty temp file of ours in ``folder`` (mode 0666 less the umask), named for its writer (see TEMP_NAME)."""
    tmp = os.path.join(folder, f".dode-{os.getpid()}@{this_host()}.{secrets.token_hex(6)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
    except OSError as e:
        if isinstance(e, PermissionError) or e.errno == errno.EROFS:
            raise read_only(path, folder) from e
        raise
    return tmp


def this_host():
    """This machine's name as it appears in our temp file names (letters and digits only)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def clean_stale_temps(folder, names=None):
    """Deletes the temp files of ours in ``folder`` (``names``: its listing, if at hand) that no writer will finish:
    made on this host by a process that is gone (kill -9 during a save), or older than STALE_TEMP_SECONDS."""
    if names is None:
        try:
            names = os.listdir(folder)
        except OSError:
            return
    for name in names:
        match = TEMP_NAME.match(name)
        tmp = os.path.join(folder, name)
        if match and temp_is_stale(tmp, *match.groups()):
            with suppress(OSError):
                os.unlink(tmp)


def temp_is_stale(tmp, pid, host):
    try:
        age = time.time() - os.lstat(tmp).st_mtime
    except OSError:
        return False
    return age > STALE_TEMP_SECONDS or (pid is not None and host == this_host() and not process_alive(int(pid)))


def process_alive(pid):
    """False only if no process ``pid`` exists on this host (posix; elsewhere every writer counts as alive)."""
    if os.name != "posix" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; not a pid this system can have
        return False
    except PermissionError:  # another user's process
        pass
    return True
