"""Render processes (osc_server.render_pool): the generator runs in worker processes and hands
its audio back through shared memory; a crash, a hang or an exception costs one note, never the
engine. The workers are real processes started with "spawn" (tests/osc_server/faulty.py is the
generator they load)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from osc_server import addresses as A
from osc_server.audio import Mixer
from osc_server.cache import NoteCache
from osc_server.engine import Engine
from osc_server.render_pool import RenderCrashed, RenderError, RenderPool, RenderTimeout
from synth.params import NoteParams
from test_osc_engine import NoClock, Replies, ons
from tone import ToneGenerator

SR = 48000


@pytest.fixture
def pool(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTY_MARKER", str(tmp_path / "crashed-once"))
    p = RenderPool("faulty:make", workers=2, render_timeout_s=2.0, nice=0)
    yield p
    p.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_a_worker_renders_what_the_generator_renders_in_process(pool):
    params = NoteParams(pitch=57, velocity=75, latent_sample=(1.5,) + (0.0,) * 15)
    audio = pool.render(params, SR)
    expected = ToneGenerator(delay_s=0).render(params, SR)
    assert audio.dtype == np.float32 and audio.shape == expected.shape
    np.testing.assert_array_equal(audio, expected)
    assert pool.model_version == "test-faulty-1"
    assert all(pid != os.getpid() for pid in pool.pids)


def test_a_worker_runs_blas_on_one_thread_whatever_the_environment_asks(tmp_path, monkeypatch):
    # OpenBLAS's threads spin on the synthesis' small matrix products and take the core the
    # audio needs; the worker imports numpy before it can set any variable, so it limits the
    # pool itself (synth.fast_render.single_threaded_blas).
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    p = RenderPool("faulty:make", workers=1, render_timeout_s=10.0, nice=0)
    try:
        audio = p.render(NoteParams(pitch=17), SR)
    finally:
        p.close()
    assert set(np.unique(audio)) == {1.0}


def test_a_crash_is_retried_once_on_a_restarted_worker(pool):
    audio = pool.render(NoteParams(pitch=14), SR)  # the first try kills the worker
    assert audio.shape == (4 * SR,) and np.max(np.abs(audio)) > 0.1
    assert pool.crashes == 1 and pool.restarts == 1
    assert pool.render(NoteParams(pitch=60), SR).shape == (4 * SR,)


def test_a_note_that_always_crashes_costs_that_note_only(pool):
    with pytest.raises(RenderCrashed):
        pool.render(NoteParams(pitch=13), SR)
    assert pool.crashes == 2
    assert pool.render(NoteParams(pitch=60), SR).shape == (4 * SR,)


def test_an_exception_in_the_generator_is_reported_and_the_worker_goes_on(pool):
    with pytest.raises(RenderError, match="pitch 16 is out of this model's range"):
        pool.render(NoteParams(pitch=16), SR)
    assert pool.restarts == 0
    assert pool.render(NoteParams(pitch=60), SR).shape == (4 * SR,)


def test_a_hung_render_times_out_and_the_worker_is_replaced(pool):
    pids = set(pool.pids)
    t = time.monotonic()
    with pytest.raises(RenderTimeout):
        pool.render(NoteParams(pitch=15), SR)
    assert time.monotonic() - t < 10
    assert pool.restarts == 1 and set(pool.pids) != pids
    assert pool.render(NoteParams(pitch=60), SR).shape == (4 * SR,)


def test_a_killed_worker_is_restarted(pool):
    for pid in pool.pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert pool.render(NoteParams(pitch=61), SR).shape == (4 * SR,)
    assert pool.restarts == 1


def test_a_generator_that_cannot_load_is_a_startup_error_that_leaves_no_process():
    with pytest.raises(RuntimeError, match="could not load the generator: OSError: checkpoints"):
        RenderPool("faulty:fail_to_load", workers=2)
    with pytest.raises(ValueError, match="module:function"):
        RenderPool("faulty", workers=1)


def test_close_stops_the_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTY_MARKER", str(tmp_path / "m"))
    p = RenderPool("faulty:make", workers=2)
    pids = p.pids
    p.close()
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        p.render(NoteParams(), SR)


def test_the_engine_answers_each_failed_note_once_and_plays_the_others(pool):
    engine = Engine(pool, Mixer(SR), NoClock(), NoteCache(64 * 2**20), workers=2)
    try:
        r = Replies()
        for pitch in (13, 16, 60):
            engine.handle(A.NoteOn(pitch, 100), None, r)
        engine.handle(A.Sync(1), None, r)
        r.wait("/synced", timeout=30)
        errors = {args[1].split(":")[0]: args for args in r.wait("/error")}
        assert set(errors) == {"pitch 13", "pitch 16"}
        assert [args for a, args in r.got if a == "/ready"] == [[60, 100]]
        assert [p[2] for *_, p in ons(engine.mixer)] == [60]
        assert engine.render_errors == 2
        # The engine's render threads are all alive and still render.
        assert all(w.is_alive() for w in engine._workers)
        engine.handle(A.NoteOn(62, 100), None, r)
        engine.handle(A.Sync(2), None, r)
        deadline = time.monotonic() + 30
        while len(r.wait("/synced")) < 2:
            assert time.monotonic() < deadline, r.got
            time.sleep(0.01)
        assert [p[2] for *_, p in ons(engine.mixer)] == [60, 62]
    finally:
        engine.close()
