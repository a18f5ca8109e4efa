"""The mixer offline (no sound card): sample-accurate starts and releases, stealing, gain, limiter,
identical output for any block size, and no allocation in the callback."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from osc_server.audio import IMMEDIATE, IMMEDIATE_ROOM, Mixer, Stat

SR = 48000


def tone(pitch_hz: float = 440.0, seconds: float = 1.0, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (level * np.sin(2 * np.pi * pitch_hz * t)).astype(np.float32)


def run(mixer: Mixer, n_samples: int, block: int, events=()) -> np.ndarray:
    """Render n_samples in blocks; events = [(at_sample_of_posting, callable)] posted before that block."""
    out = np.zeros((n_samples, 2), dtype=np.float32)
    pending = sorted(events, key=lambda e: e[0])
    pos = 0
    while pos < n_samples:
        while pending and pending[0][0] <= pos:
            pending.pop(0)[1]()
        n = min(block, n_samples - pos)
        mixer.render(out[pos:pos + n])
        pos += n
    assert np.array_equal(out[:, 0], out[:, 1])
    return out[:, 0]


def test_scheduled_note_starts_and_releases_at_the_exact_sample():
    audio = np.ones(SR, dtype=np.float32) * 0.5
    m = Mixer(SR)
    m.note_on(audio, 1.0, 60, target=1000)
    m.note_off(60, target=3000)
    out = run(m, 6000, 256)
    assert np.all(out[:1000] == 0) and out[1000] == pytest.approx(0.5)
    assert np.all(out[1000:3000] == pytest.approx(0.5))
    fade = out[3000:3000 + m.release_len]
    assert np.all(np.diff(fade) <= 1e-7) and fade[0] == pytest.approx(0.5)  # raised cosine, downwards
    assert np.all(out[3000 + m.release_len:] == 0)
    assert m.n_voices == 0


def test_output_does_not_depend_on_block_size():
    a, b = tone(440), tone(660, level=0.3)

    def events(m):
        return [(0, lambda: m.note_on(a, 0.8, 69, target=123)), (0, lambda: m.note_on(b, 1.0, 76, target=777)),
                (0, lambda: m.note_off(69, target=5000)), (0, lambda: m.set_gain_db(-6.0))]

    outs = []
    for block in (32, 256, 513, 1029):
        m = Mixer(SR)
        outs.append(run(m, 12000, block, events(m)))
    for o in outs[1:]:
        # Gain ramps span one block, so only the first block's ramp may differ.
        np.testing.assert_allclose(o[1100:], outs[0][1100:], atol=1e-6)


def test_immediate_note_starts_at_the_next_block():
    m = Mixer(SR)
    out = np.zeros((256, 2), dtype=np.float32)
    m.render(out)
    m.note_on(np.full(1000, 0.25, dtype=np.float32), 1.0, 60, IMMEDIATE)
    m.render(out)
    assert out[0, 0] == pytest.approx(0.25)


def test_oldest_voice_is_stolen_beyond_the_limit_and_the_limiter_holds_full_scale():
    m = Mixer(SR, max_voices=32)
    loud = np.ones(SR, dtype=np.float32)
    for i in range(40):
        m.note_on(loud, 1.0, 40 + i, target=100 + i)
    out = run(m, 9600, 256)
    assert m.stats[1] == 8  # stolen
    assert m.n_voices == 32
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
    assert np.max(np.abs(out[2000:])) <= m.limit + 1e-6


def test_gain_is_ramped_without_a_step():
    m = Mixer(SR)
    m.note_on(np.full(SR, 0.5, dtype=np.float32), 1.0, 60, target=0)
    m.set_gain_db(-6.0)
    out = run(m, 2048, 256)
    assert out[0] == pytest.approx(0.5, abs=1e-3)
    assert np.max(np.abs(np.diff(out))) < 0.5 * 0.5 / 256 * 1.01  # spread over one block
    assert out[-1] == pytest.approx(0.5 * 10 ** (-6 / 20), rel=1e-4)


def test_panic_silences_within_a_few_milliseconds():
    m = Mixer(SR)
    for p in range(10):
        m.note_on(tone(200 + 50 * p, level=0.05), 1.0, p + 40, target=0)
    m.note_on(tone(300), 1.0, 90, target=5000)  # scheduled: dropped by the panic
    run(m, 512, 256)
    m.panic()
    out = run(m, 6000, 256)
    assert np.all(out[m.steal_len:] == 0)


def test_the_callback_allocates_no_arrays():
    m = Mixer(SR, max_voices=32)
    for i in range(32):
        m.note_on(tone(100 + 20 * i, level=0.05), 0.9, i + 30, target=i * 10)
    # 4096-frame blocks: any temporary array would be >= 16 KiB, while the views numpy creates
    # for slices are a few hundred bytes each whatever the block size.
    out = np.zeros((4096, 2), dtype=np.float32)
    for _ in range(4):
        m.render(out)
    m.note_off(30)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    for _ in range(5):
        m.render(out)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    assert peak < 8192, peak


def test_stat_indices_are_named():
    assert Mixer.STAT_NAMES[Stat.EVENTS_DROPPED] == "events_dropped"
    assert Mixer.STAT_NAMES == ("notes_started", "notes_stolen", "events_dropped", "underruns", "voices",
                                "clipped_blocks", "events_done", "skipped_notes", "stream_late")
    assert Mixer(SR).stats.shape == (len(Stat),)


def test_a_full_schedule_never_keeps_out_panic_or_an_immediate_note():
    m = Mixer(SR)
    far = 20 * SR
    loud = np.ones(SR, dtype=np.float32)
    for i in range(9000):  # more than max_pending
        m.note_on(loud, 0.5, 40 + i % 60, target=far + i)
    assert m.n_scheduled == 9000  # still in the inbox, counted by the posting side
    out = np.zeros((256, 2), dtype=np.float32)
    m.render(out)
    assert not out.any()
    assert m.n_scheduled == m.max_pending and m.stats[Stat.EVENTS_DROPPED] == 9000 - m.max_pending
    m.panic()
    m.note_on(np.full(1000, 0.25, dtype=np.float32), 1.0, 60, IMMEDIATE)  # posted after the panic
    later = m.block_start + 2000
    m.note_on(np.full(100, 0.125, dtype=np.float32), 1.0, 61, target=later)  # so is this
    m.render(out)
    assert out[0, 0] == pytest.approx(0.25)  # the next block
    assert m.n_scheduled == 1 and m.n_pending == 1  # the schedule is gone, the later note stays
    assert m.stats[Stat.EVENTS_DROPPED] == 9000 - m.max_pending  # immediate events are never dropped
    t0 = m.block_start
    rest = run(m, far + 9000 - t0, 8192)
    assert np.all(rest[:1000 - 256] == pytest.approx(0.25)) and not rest[1000 - 256:later - t0].any()
    assert np.all(rest[later - t0:later - t0 + 100] == pytest.approx(0.125))
    assert not rest[later - t0 + 100:].any()  # no scheduled note plays later
    assert m.stats[Stat.NOTES_STARTED] == 2 and m.n_scheduled == 0 and m.n_pending == 0


def test_panic_in_the_same_inbox_as_the_schedule_clears_it():
    m = Mixer(SR)
    for i in range(9000):
        m.note_on(np.ones(100, dtype=np.float32), 0.5, 60, target=SR + i)
    m.panic()
    m.note_on(np.full(1000, 0.25, dtype=np.float32), 1.0, 60, IMMEDIATE)
    out = run(m, 3 * SR, 256)
    assert out[0] == pytest.approx(0.25) and not out[1000:].any()
    assert m.stats[Stat.NOTES_STARTED] == 1 and m.n_scheduled == 0 and m.n_pending == 0


def test_immediate_events_beyond_the_room_wait_for_the_next_block_and_are_never_dropped():
    m = Mixer(SR)
    for i in range(m.max_pending):  # the schedule is full
        m.note_on(np.ones(100, dtype=np.float32), 0.5, 60, target=10 * SR + i)
    extra = IMMEDIATE_ROOM + 100
    for _ in range(extra):
        m.note_off(61)
    m.note_on(np.full(1000, 0.25, dtype=np.float32), 1.0, 60, IMMEDIATE)
    m.note_on(np.ones(100, dtype=np.float32), 0.5, 60, target=10 * SR)  # one scheduled too many
    out = np.zeros((256, 2), dtype=np.float32)
    m.render(out)
    assert m.stats[Stat.EVENTS_DONE] == IMMEDIATE_ROOM and len(m.inbox) == 102
    assert not out.any()
    m.render(out)
    assert out[0, 0] == pytest.approx(0.25)
    assert m.stats[Stat.EVENTS_DONE] == extra + 1
    assert m.stats[Stat.EVENTS_DROPPED] == 1 and m.n_scheduled == m.max_pending


def test_a_panic_block_with_a_full_schedule_allocates_no_arrays():
    m = Mixer(SR)
    audio = tone(level=0.05)
    for i in range(8):
        m.note_on(audio, 0.5, 60 + i, IMMEDIATE)  # sounding when the panic comes
    for i in range(m.max_pending):
        m.note_on(audio, 0.5, 60, target=10 * SR + i)
    out = np.zeros((4096, 2), dtype=np.float32)
    m.render(out)
    m.panic()
    for _ in range(100):
        m.note_off(60)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    m.render(out)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    assert m.n_pending == 0 and m.n_scheduled == 0
    assert peak < 8192, peak


def test_a_head_fades_in_where_it_starts_playing_and_out_at_its_release():
    """`head_on` (live voices' known notes): the audio from its start sample, a 1 ms fade-in from
    the first sample it plays, a raised-cosine fade-out of `fade` samples from `release_at`; posted
    late (its block begun), it plays on from where the block is, fading in there."""
    head = np.full(2000, 0.5, np.float32)
    m = Mixer(SR)
    m.add_fade(192)
    m.head_on(head, 0.8, 60, start=512, release_at=1500, fade=192)
    out = run(m, 3000, 256)
    ramp = np.linspace(0.0, 1.0, m.fade_in_len, endpoint=False, dtype=np.float32)
    assert np.all(out[:512] == 0)
    assert np.allclose(out[512:512 + m.fade_in_len], 0.4 * ramp)
    assert np.allclose(out[512 + m.fade_in_len:1500], 0.4)
    cosine = 0.5 + 0.5 * np.cos(np.pi * np.arange(192) / 192)
    assert np.allclose(out[1500:1692], 0.4 * cosine, atol=1e-6)
    assert np.all(out[1692:] == 0) and m.n_voices == 0

    # Late: posted for sample 512 while the block 512..768 is already done.
    late = Mixer(SR)
    late.add_fade(192)
    out = run(late, 3000, 256, events=[(768, lambda: late.head_on(np.arange(2000, dtype=np.float32) / 2000, 1.0, 60,
                                                                    start=512, release_at=1500, fade=192))])
    assert np.all(out[:768] == 0)
    # It plays on from sample 256 of the head (aligned to its start), fading in from there.
    assert np.allclose(out[768:768 + late.fade_in_len], (np.arange(256, 256 + late.fade_in_len) / 2000) * ramp)
    assert np.allclose(out[768 + late.fade_in_len:1500], np.arange(256 + late.fade_in_len, 988) / 2000)
