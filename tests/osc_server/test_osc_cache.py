"""The note cache: LRU under a byte budget, persistence, corrupt and foreign files."""

from __future__ import annotations

import numpy as np

from osc_server.cache import NoteCache, note_key
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
