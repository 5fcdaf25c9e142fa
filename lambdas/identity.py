"""The checkpoint identity every host can compute: the AutoV2 hash (the WebUI's short hash)."""
import hashlib
import json
import logging
import os
import threading

from .atomic import write_atomically

log = logging.getLogger("dode")
_hash_lock = threading.Lock()
_hash_memo = {}  # (realpath, size, mtime_ns) -> sha256 hex


def autov2(path, cache=None):
    """sha256(file)[:10], memoised per (real path, size, mtime) in memory and in the JSON ``cache`` file."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    stamp = [stat.st_size, stat.st_mtime_ns]
    with _hash_lock:
        digest = _hash_memo.get((real, *stamp))
        if digest is None:
            digest = cached_sha256(real, stamp, cache)
            _hash_memo[(real, *stamp)] = digest
    return digest[:10]


def cached_sha256(real, stamp, cache):
    """The sha256 of ``real`` from ``cache`` ({real path: [size, mtime_ns, sha256]}), else hashed and cached."""
    disk = {}
    if cache:
        try:
            with open(cache, encoding="utf-8") as f:
                disk = json.load(f)
        except (OSError, ValueError):
            pass
    known = disk.get(real) if isinstance(disk, dict) else None
    if isinstance(known, list) and known[:2] == stamp and len(known) == 3:
        return known[2]
    log.info("[dode] hashing %s (%.2f GB) for its AutoV2; once per file version", real, stamp[0] / 1e9)
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if cache:
        disk = disk if isinstance(disk, dict) else {}
        disk[real] = stamp + [digest]
        try:
            write_atomically(cache, lambda tmp: write_text(tmp, json.dumps(disk)))
        except OSError as e:
            log.warning("[dode] could not write the hash cache %s: %s", cache, e)
    return digest



def write_text(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
