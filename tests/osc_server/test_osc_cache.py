"""The note cache: LRU under a byte budget, persistence, corrupt and foreign files, and a disk
that fails (full, read-only, vanished, a folder in a file's place) without failing the cache."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess

import numpy as np
import pytest

from osc_server import cache as cache_mod
from osc_server.cache import CacheDirError, NoteCache, note_key
from synth.params import NoteParams


def note(n: int, value: float = 0.1) -> np.ndarray:
    return np.full(n, value, dtype=np.float32)


def test_lru_eviction_under_budget_and_counters():
    cache = NoteCache(budget_bytes=3 * 4000)
    for k in "abc":
        cache.put(k, note(1000))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", note(1000))  # evicts b, the least recently used
    assert cache.get("b") is None
    assert {k for k in "acd" if cache.get(k) is not None} == {"a", "c", "d"}
    assert cache.n_bytes <= 3 * 4000 and cache.n_notes == 3
    assert (cache.hits, cache.misses, cache.evictions) == (4, 1, 1)


def test_key_includes_rate_and_model_version():
    p = NoteParams(pitch=60, velocity=100)
    keys = {note_key(p, 48000, "m1"), note_key(p, 44100, "m1"), note_key(p, 48000, "m2"),
            note_key(p.replace(velocity=75), 48000, "m1")}
    assert len(keys) == 4
    assert note_key(NoteParams(qualities=("dark", "bright")), 48000, "m") == \
        note_key(NoteParams(qualities=("bright", "dark")), 48000, "m")


def test_persistence_makes_a_restart_warm(tmp_path):
    a = NoteCache(10**6, tmp_path)
    stored = a.put("k1", np.linspace(-1, 1, 500, dtype=np.float32))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # renamed into place
    b = NoteCache(10**6, tmp_path)  # a new process, same folder
    got = b.get("k1")
    np.testing.assert_array_equal(got, stored)
    assert (b.hits, b.disk_hits, b.misses) == (1, 1, 0)


def test_corrupt_truncated_and_foreign_files_are_ignored_then_replaced(tmp_path):
    a = NoteCache(10**6, tmp_path)
    a.put("k1", note(500))
    path = a._path("k1")
    blob = path.read_bytes()
    for bad in (blob[:-7], blob[:-4] + b"\x00\x00\x80\x7f", b"garbage", blob.replace(b'"k1"', b'"k2"')):
        path.write_bytes(bad)
        fresh = NoteCache(10**6, tmp_path)
        assert fresh.get("k1") is None and fresh.ignored_files == 1 and fresh.misses == 1
    fresh.put("k1", note(500, 0.2))  # re-rendered: the file is good again
    again = NoteCache(10**6, tmp_path)
    assert float(again.get("k1")[0]) == np.float32(0.2)


def test_disk_budget_drops_the_least_recently_used_files(tmp_path):
    size = len(_file_bytes(tmp_path))
    cache = NoteCache(10**6, tmp_path / "c", disk_budget_bytes=3 * size)
    for k in ("k1", "k2", "k3"):
        cache.put(k, note(500))
    assert cache.disk_bytes == 3 * size and cache.disk_evictions == 0
    cache.clear_memory()
    assert cache.get("k1") is not None  # read from disk: now the most recently used
    cache.put("k4", note(500))
    assert cache.disk_evictions == 1 and cache.disk_bytes == 3 * size
    assert cache._path("k1").exists() and not cache._path("k2").exists()
    assert sorted(p.name for p in (tmp_path / "c").glob("*.note")) == sorted(
        cache._path(k).name for k in ("k1", "k3", "k4"))


def test_disk_budget_applies_to_files_found_at_start(tmp_path):
    import os
    import time

    a = NoteCache(10**6, tmp_path)
    for i, k in enumerate(("k1", "k2", "k3", "k4")):
        a.put(k, note(500))
        os.utime(a._path(k), (time.time() - 100 + i, time.time() - 100 + i))  # k1 oldest
    size = a._path("k1").stat().st_size
    b = NoteCache(10**6, tmp_path, disk_budget_bytes=2 * size)  # a restart with a smaller budget
    assert b.disk_evictions == 2 and b.disk_bytes == 2 * size
    assert [b._path(k).exists() for k in ("k1", "k2", "k3", "k4")] == [False, False, True, True]
    assert b.get("k4") is not None and b.get("k1") is None


def _file_bytes(tmp_path):
    probe = NoteCache(10**6, tmp_path / "probe")
    probe.put("k1", note(500))
    return probe._path("k1").read_bytes()


# ---- a failing disk never fails the cache ---------------------------------------------------

def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "osc_server.cache" and r.levelno >= logging.WARNING]


def no_disk_after_this(monkeypatch):
    """Every disk access goes through _path: fail the test if one happens."""
    def touched(self, key):
        raise AssertionError(f"the disk was touched for {key}")
    monkeypatch.setattr(NoteCache, "_path", touched)


def half_writing_open(fail_errno, calls):
    """An `open` whose file takes a few bytes, then fails as a full or read-only disk does."""
    real_open = open

    class Half:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:10])
            self.f.flush()
            raise OSError(fail_errno, os.strerror(fail_errno))

    def fake_open(path, mode="r", *args, **kwargs):
        calls.append(path)
        return Half(real_open(path, mode, *args, **kwargs))

    return fake_open


@pytest.mark.parametrize("fail_errno", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_full_disk_switches_the_disk_cache_off_once(tmp_path, monkeypatch, caplog, fail_errno):
    cache = NoteCache(10**6, tmp_path)
    cache.put("k0", note(500))  # the disk works at first
    calls = []
    monkeypatch.setattr(cache_mod, "open", half_writing_open(fail_errno, calls), raising=False)
    with caplog.at_level(logging.INFO, logger="osc_server.cache"):
        stored = cache.put("k1", note(500, 0.3))
        np.testing.assert_array_equal(stored, note(500, 0.3))
        assert cache.get("k1") is stored  # from memory
        assert not cache.disk_enabled and os.strerror(fail_errno) in cache.disk_error
        assert len(calls) == 1 and not list(tmp_path.glob(".*.tmp"))  # the half-written file is gone
        no_disk_after_this(monkeypatch)
        for k in ("k2", "k3"):
            assert cache.put(k, note(500)) is not None
        cache.clear_memory()
        assert cache.get("k0") is None and not cache.contains("k0")  # memory only from now on
        assert cache.put("k0", note(500)) is cache.get("k0")
    [warning] = warnings_of(caplog)
    assert warning.startswith(f"disk cache switched off: {tmp_path}: {os.strerror(fail_errno)}")
    assert len(calls) == 1


def test_a_read_only_folder_switches_the_disk_cache_off_once(tmp_path, monkeypatch, caplog):
    cache = NoteCache(10**6, tmp_path)
    real_replace = os.replace
    renames = []

    def read_only(src, dst):
        renames.append(dst)
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(cache_mod.os, "replace", read_only)
    with caplog.at_level(logging.WARNING, logger="osc_server.cache"):
        stored = cache.put("k1", note(500))
        assert cache.get("k1") is stored and cache.disk_error == "Read-only file system (EROFS)"
        assert not list(tmp_path.iterdir())  # the temporary file is removed
        cache.put("k2", note(500))
        assert len(renames) == 1
    monkeypatch.setattr(cache_mod.os, "replace", real_replace)
    assert len(warnings_of(caplog)) == 1 and "disk cache switched off" in warnings_of(caplog)[0]
    assert NoteCache(10**6, tmp_path).disk_enabled  # a restart tries the disk again


def test_a_vanished_folder_switches_the_disk_cache_off(tmp_path, caplog):
    cache = NoteCache(10**6, tmp_path / "c")
    shutil.rmtree(tmp_path / "c")
    with caplog.at_level(logging.WARNING, logger="osc_server.cache"):
        assert cache.put("k1", note(500)) is cache.get("k1")
    assert not cache.disk_enabled and "ENOENT" in cache.disk_error
    assert len(warnings_of(caplog)) == 1


def test_a_folder_where_a_note_file_goes_skips_the_disk_for_that_note_only(tmp_path, caplog):
    cache = NoteCache(10**6, tmp_path)
    cache._path("k1").mkdir()  # read side: found at a lookup
    cache._path("k2").mkdir()  # write side: found when the rendered note is stored
    with caplog.at_level(logging.WARNING, logger="osc_server.cache"):
        assert not cache.contains("k1")
        for _ in range(3):
            assert cache.get("k1") is None  # a miss, never an exception
        assert cache.ignored_files == 1 and cache.misses == 3
        stored = cache.put("k1", note(500))  # rendered: playable, kept in memory
        assert cache.get("k1") is stored
        assert cache.put("k2", note(500)) is cache.get("k2")
        assert not list(tmp_path.glob(".*.tmp"))
        cache.put("k3", note(500))  # other notes still go to disk
        assert cache._path("k3").is_file() and cache.disk_enabled and cache.disk_error is None
        cache.clear_memory()
        assert cache.get("k1") is None and cache.get("k2") is None and cache.get("k3") is not None
        cache.put("k1", note(500))
        cache.put("k2", note(500))
    warnings = warnings_of(caplog)
    assert len(warnings) == 2  # once per note
    assert any("cannot read" in w and "k1" not in w and str(cache._path("k1")) in w for w in warnings)
    assert any("cannot write" in w and str(cache._path("k2")) in w for w in warnings)
    # A restart does not count the folders as note files, and its budget trimming skips them.
    again = NoteCache(10**6, tmp_path, disk_budget_bytes=1)
    assert again.disk_bytes == cache._path("k3").stat().st_size


def test_a_read_error_is_a_miss_logged_once(tmp_path, monkeypatch, caplog):
    cache = NoteCache(10**6, tmp_path)
    cache.put("k1", note(500))
    cache.clear_memory()

    def eio(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cache_mod.Path, "read_bytes", eio)
    with caplog.at_level(logging.WARNING, logger="osc_server.cache"):
        assert cache.get("k1") is None and cache.get("k1") is None
    assert cache.ignored_files == 1 and cache.misses == 2 and len(warnings_of(caplog)) == 1
    assert cache.disk_enabled  # reads never switch the disk off


def test_leftover_temporary_files_are_removed_at_start(tmp_path, caplog):
    a = NoteCache(10**6, tmp_path)
    a.put("k1", note(500))
    size = a._path("k1").stat().st_size
    for i in range(3):
        (tmp_path / f".{a._path('k2').name}.{1000 + i}.1.tmp").write_bytes(b"x" * 700)
    with caplog.at_level(logging.INFO, logger="osc_server.cache"):
        b = NoteCache(10**6, tmp_path)
    assert not list(tmp_path.glob(".*.tmp")) and b.disk_bytes == size
    assert any("removed 3 leftover temporary file(s)" in r.getMessage() for r in caplog.records)


def test_leftover_temporary_files_that_cannot_be_removed_count_in_the_budget(tmp_path, monkeypatch):
    a = NoteCache(10**6, tmp_path)
    a.put("k1", note(500))
    size = a._path("k1").stat().st_size
    leftover = tmp_path / ".x.note.99.1.tmp"
    leftover.write_bytes(b"x" * 700)
    real_unlink = os.unlink
    fails = [10**6]

    def stubborn(path, *args, **kwargs):
        if str(path).endswith(".tmp") and fails[0] > 0:
            fails[0] -= 1
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(cache_mod.os, "unlink", stubborn)
    b = NoteCache(10**6, tmp_path)
    assert leftover.exists() and b.disk_bytes == size + 700 and b.disk_enabled
    # Over budget: the leftover is first in line; when it can be removed, the notes stay.
    fails[0] = 1  # fails at start, then the budget's trimming removes it
    c = NoteCache(10**6, tmp_path, disk_budget_bytes=size + 100)
    assert not leftover.exists() and c.disk_bytes == size and c._path("k1").exists()
    assert c.disk_evictions == 1


def test_a_file_as_cache_dir_is_a_cache_dir_error(tmp_path):
    f = tmp_path / "notes"
    f.write_text("not a folder")
    with pytest.raises(CacheDirError, match=r"^cache_dir: .*notes is a file, not a folder$"):
        NoteCache(10**6, f)
    with pytest.raises(CacheDirError, match=r"^cache_dir: cannot create .*notes is a file, not a folder$"):
        NoteCache(10**6, f / "sub")
    assert issubclass(CacheDirError, ValueError)


# ---- the repro: a real, small tmpfs -------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}): needs root and mount permission")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_a_real_256k_tmpfs_fills_up_and_rendering_goes_on(tiny_tmpfs, caplog):
    cache = NoteCache(64 * 2**20, tiny_tmpfs)
    notes = {f"k{i}": note(16000, 0.01 * (i + 1)) for i in range(8)}  # 64 KB each: the 4th or so fills it
    with caplog.at_level(logging.WARNING, logger="osc_server.cache"):
        for k, audio in notes.items():
            np.testing.assert_array_equal(cache.put(k, audio), audio)
    assert not cache.disk_enabled and "ENOSPC" in cache.disk_error
    for k, audio in notes.items():
        np.testing.assert_array_equal(cache.get(k), audio)
    assert [w for w in warnings_of(caplog) if "disk cache switched off" in w] == warnings_of(caplog)
    assert len(warnings_of(caplog)) == 1 and str(tiny_tmpfs) in warnings_of(caplog)[0]
    assert not list(tiny_tmpfs.glob(".*.tmp"))  # the half-written file was removed
    warm = NoteCache(64 * 2**20, tiny_tmpfs)  # a restart reads back the notes that fitted
    assert 1 <= sum(warm.get(k) is not None for k in notes) < len(notes) and warm.ignored_files == 0


def test_a_real_read_only_tmpfs(tiny_tmpfs, caplog):
    NoteCache(10**6, tiny_tmpfs).put("k1", note(500))
    done = subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {done.stderr.strip()}")
    cache = NoteCache(10**6, tiny_tmpfs)
    assert cache.get("k1") is not None  # reading a read-only cache works
    with caplog.at_level(logging.WARNING, logger="osc_server.cache"):
        assert cache.put("k2", note(500)) is cache.get("k2")
        cache.put("k3", note(500))
    assert not cache.disk_enabled and "EROFS" in cache.disk_error and len(warnings_of(caplog)) == 1
