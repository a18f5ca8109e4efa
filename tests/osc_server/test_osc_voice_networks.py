"""The voice process's networks process (`osc_server.voices.NetworksProcess`), with the shipped
weights: jobs in, NoteStarts out, however many are queued at once."""

from __future__ import annotations

import threading
import time

from osc_server.render_pool import DEFAULT_FACTORY
from osc_server.voices import NetworksProcess
from synth.params import NoteParams


def test_a_burst_of_jobs_never_blocks_the_submitter_and_every_job_is_answered():
    """Hundreds of jobs at once (12- to 32-note chords every 100 ms after a timbre change ask for
    that): the pipe to the process fills while its answers (about 40 KB each) fill the pipe back.
    `submit` must return at once whatever the backlog, and every job must be answered. (It used to
    hold the callbacks' lock while blocked on the full pipe, while the reader waited for that lock
    to hand over an answer and the process waited for the reader: all three stuck for good.)"""
    networks = NetworksProcess(DEFAULT_FACTORY)
    submitted = threading.Event()
    try:
        n = 400
        answered = threading.Semaphore(0)
        got = []

        def done(starts):
            got.append(starts[0].params.pitch)
            answered.release()

        longest = []

        def submit_all():
            for k in range(n):
                t = time.perf_counter()
                networks.submit([NoteParams(pitch=36 + k % 48, velocity=100)], True, done)
                longest.append(time.perf_counter() - t)
            submitted.set()

        threading.Thread(target=submit_all, daemon=True).start()
        assert submitted.wait(30), "submit blocked behind the process's backlog"
        assert max(longest) < 0.1  # a queued job, never a wait for the pipe
        deadline = time.monotonic() + 180
        for _ in range(n):
            assert answered.acquire(timeout=max(0.0, deadline - time.monotonic())), \
                f"{len(got)} of {n} jobs answered: the networks process or its reader is stuck"
        assert sorted(got) == sorted(36 + k % 48 for k in range(n))
        assert networks.pending() == 0
    finally:
        if not submitted.is_set():  # (stuck: free the submitter, so that close() does not hang too)
            networks.process.kill()
        networks.close()
    assert not networks.process.is_alive()
