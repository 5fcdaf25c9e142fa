"""Atomic writes (lambdas/atomic.py): temp file then os.replace, named errors, stale temps."""
import os

import pytest

import dode
from dode.samplers import karras_sigmas
from lambda_factory import entry, dead_pid


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    dode.save_lambdas(path, entry())
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dode.lambdas.files.write_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        dode.save_lambdas(path, entry(cfg=3.0))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_write_errors_name_the_real_problem(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder"):
        dode.save_lambdas(tmp_path / "file" / "sub" / "m.safetensors", entry())
    with pytest.raises(NotADirectoryError, match=r"file is a file, not a folder"):
        dode.LambdaStore().add(tmp_path / "file" / "m.safetensors", entry())
    real_open = os.open

    def read_only(path, flags, *args):
        if ".dode-" in os.fspath(path) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(PermissionError, match=r"the folder .*ro is read-only; choose a writable folder") as e:
        dode.save_lambdas(tmp_path / "ro" / "m.safetensors", entry())
    assert ".dode-" not in str(e.value)
    monkeypatch.undo()
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)  # what a read-only mount reports
    for save in (dode.save_lambdas, dode.LambdaStore().add):
        with pytest.raises(PermissionError, match=r"the folder .*ro2 is read-only"):
            save(tmp_path / "ro2" / "m.safetensors", entry())
    assert os.listdir(tmp_path / "ro2") == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_named(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="read-only"):
            dode.save_lambdas(folder / "m.safetensors", entry())
    finally:
        folder.chmod(0o755)


def test_saving_never_touches_the_process_umask(tmp_path, monkeypatch):
    umask = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda *a: pytest.fail("save_lambdas changed the process umask"))
        path = dode.save_lambdas(tmp_path / "m.safetensors", entry())
        dode.LambdaStore().add(path, entry("heun"))
    finally:
        monkeypatch.undo()
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_stale_temp_files_of_ours_are_cleaned_on_the_next_scan_and_write(tmp_path):
    import time
    host = dode.lambdas.atomic.this_host()
    folder = tmp_path / "lambdas"
    folder.mkdir()
    dead, alive, old, fresh, other = (folder / f".dode-{dead_pid()}@{host}.a1.tmp",
                                      folder / f".dode-{os.getpid()}@{host}.b2.tmp",
                                      folder / ".dode-oldstyle.tmp", folder / ".dode-fresh.tmp", folder / ".other.tmp")
    for p in (dead, alive, old, fresh, other):
        p.write_bytes(b"partial")
    hour_ago = time.time() - dode.lambdas.atomic.STALE_TEMP_SECONDS - 60
    os.utime(old, (hour_ago, hour_ago))
    dode.LambdaStore([folder]).lookup("m", "euler", karras_sigmas(5))
    assert sorted(p.name for p in folder.iterdir()) == sorted([alive.name, fresh.name, other.name])
    dead.write_bytes(b"partial")
    dode.save_lambdas(folder / "m.safetensors", entry())
    assert sorted(p.name for p in folder.iterdir()) == sorted([alive.name, fresh.name, other.name, "m.safetensors"])
