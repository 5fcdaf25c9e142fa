"""Two hosts on one λ folder (issue 10): concurrent adds lose no entry, a reader never sees a torn or mixed file.

N processes (and threads) × M entries go into one file and into one store folder; afterwards every entry is there.
A reader loads a file in a loop while another process rewrites it with versions of different layouts; every load
succeeds and is one whole version (each entry's metadata and λ carry the version number, so old metadata with new λ
would show). Before the lock, 2 processes lost 9 of 40 entries and 4 threads 53 of 80; before the one-read loader,
15 of 2,000 loads failed.
"""
import multiprocessing
import os
import threading
import time

import pytest
import torch

import dode
from dode.lambdas import LambdaEntry
from dode.samplers import karras_sigmas

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the writers are forked processes")
WORKERS = int(os.environ.get("DODE_WRITERS", "4"))  # more for a longer run
ENTRIES = int(os.environ.get("DODE_ENTRIES", "8"))


def entry(worker, m, steps=5, sampler="euler", model="model-a", value=0.0):
    sigmas = karras_sigmas(steps)
    return LambdaEntry(sampler, sigmas, torch.full((dode.nfe(sampler, sigmas),), value), model=model,
                       cfg=float(100 * worker + m), metrics={"worker": worker, "m": m}, created="2026-01-01")


def add_all(worker, start, target):
    """Worker ``worker``: after ``start``, adds its M entries, each to ``target(m)``."""
    start.wait()
    store = dode.LambdaStore()
    for m in range(ENTRIES):
        store.add(target(m), entry(worker, m))


def run_processes(target):
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=add_all, args=(w, start, target)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0] * WORKERS


def stored(paths):
    return sorted((e.metrics["worker"], e.metrics["m"]) for p in paths for e in dode.load_lambdas(p))


EVERY = sorted((w, m) for w in range(WORKERS) for m in range(ENTRIES))


def test_processes_adding_to_one_file_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.safetensors")
    run_processes(lambda m: path)
    assert stored([path]) == EVERY
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    print(f"\n{WORKERS} processes × {ENTRIES} entries into one file: {len(EVERY)} of {len(EVERY)} kept")


def test_processes_adding_to_one_store_folder_lose_nothing(tmp_path):
    folder = tmp_path / "dode_lambdas"
    run_processes(lambda m: str(folder / f"file{m % 3}.safetensors"))
    assert stored(sorted(folder.glob("*.safetensors"))) == EVERY
    print(f"\n{WORKERS} processes × {ENTRIES} entries into one folder of 3 files: {len(EVERY)} of {len(EVERY)} kept")
    store = dode.LambdaStore([folder])
    for w, m in EVERY:
        found, where = store.lookup("model-a", "euler", karras_sigmas(5), cfg=100 * w + m)
        assert found is not None and where.endswith(f"file{m % 3}.safetensors")


def test_threads_adding_to_one_file_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.safetensors")
    start = threading.Barrier(WORKERS)
    threads = [threading.Thread(target=add_all, args=(w, start, lambda m: path)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert stored([path]) == EVERY
    print(f"\n{WORKERS} threads × {ENTRIES} entries into one file: {len(EVERY)} of {len(EVERY)} kept")


def version(v):
    """Version ``v`` of a file: layouts differ between versions (entry count, steps, samplers); every entry's λ and
    metadata carry ``v``."""
    shapes = [[("euler", 5)], [("heun", 8), ("dpmpp_2m", 3)], [("euler", 3), ("ipndm", 6), ("heun", 4)]][v % 3]
    return [entry(v, k, steps, sampler, value=v / 1000) for k, (sampler, steps) in enumerate(shapes)]


def rewrite_forever(path, stop):
    v = 0
    while not stop.is_set():
        v += 1
        dode.save_lambdas(path, version(v))


def test_a_reader_never_sees_a_torn_or_mixed_file(tmp_path):
    path = str(tmp_path / "rewritten.safetensors")
    dode.save_lambdas(path, version(0))
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    writer = ctx.Process(target=rewrite_forever, args=(path, stop))
    writer.start()
    loads, versions, deadline = 0, set(), time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            entries = dode.load_lambdas(path)  # any LambdaFileError fails the test
            v = entries[0].metrics["worker"]
            assert [e.meta() for e in entries] == [e.meta() for e in version(v)]
            assert all(torch.equal(e.lambdas, w.lambdas) for e, w in zip(entries, version(v)))
            loads += 1
            versions.add(v)
    finally:
        stop.set()
        writer.join(30)
    print(f"\nreader: {loads} loads, {len(versions)} versions seen, 0 errors")
    assert writer.exitcode == 0 and loads > 100 and len(versions) > 10


def test_a_lock_held_too_long_says_what_to_do(tmp_path, monkeypatch):
    from filelock import FileLock
    from dode.lambdas import store as store_mod
    path = tmp_path / "held.safetensors"
    monkeypatch.setattr(store_mod, "LOCK_TIMEOUT", 0.2)
    with FileLock(store_mod.lock_path(path)):  # one lock per folder
        with pytest.raises(TimeoutError, match=r"\.dode\.lock: another process held this lock for 0\.2 s"):
            dode.LambdaStore().add(path, entry(0, 0))
    dode.LambdaStore().add(path, entry(0, 0))
    assert stored([path]) == [(0, 0)]
