"""The engine without a sound card: cache hits and misses, one render per note, render_blocking,
/sync, /ready, pre-rendering, failures answered. The mixer is run by hand (its inbox inspected)."""

from __future__ import annotations

import threading
import time

import pytest

from osc_server import addresses as A
from osc_server.audio import EV_ON, EV_ONS, IMMEDIATE, Mixer
from osc_server.cache import NoteCache
from osc_server.engine import Engine
from synth.params import NoteParams
from tone import ToneGenerator

SR = 48000


class NoClock:
    def sample_at(self, t_wall: float) -> int:
        return IMMEDIATE


class Replies:
    def __init__(self):
        self.got: list = []
        self.cond = threading.Condition()

    def __call__(self, address, *args):
        with self.cond:
            self.got.append((address, list(args)))
            self.cond.notify_all()

    def wait(self, address, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not any(a == address for a, _ in self.got):
                left = deadline - time.monotonic()
                assert left > 0, f"no {address}: {self.got}"
                self.cond.wait(left)
            return [args for a, args in self.got if a == address]


@pytest.fixture
def engine():
    gen = ToneGenerator(delay_s=0.05)
    mixer = Mixer(SR)
    e = Engine(gen, mixer, NoClock(), NoteCache(64 * 2**20), workers=2)
    yield e
    e.close()


def ons(mixer):
    """The voices posted to the mixer, as (kind, target, seq, (audio, gain, pitch, release_at))."""
    out = []
    for kind, target, seq, payload in list(mixer.inbox):
        if kind == EV_ON:
            out.append((kind, target, seq, payload))
        elif kind == EV_ONS:
            out += [(EV_ON, target, seq, note) for note in payload]
    return out


def test_miss_renders_once_then_hits(engine):
    r = Replies()
    engine.handle(A.NoteOn(60, 100), None, r)
    engine.handle(A.NoteOn(60, 110), None, r)  # layer 100 too: joins the same render
    r.wait("/ready")
    time.sleep(0.05)
    assert sum(engine.generator.renders.values()) == 1
    assert r.got.count(("/ready", [60, 100])) == 1
    voices = ons(engine.mixer)
    assert [ev[3][1] for ev in voices] == pytest.approx([1.0, 110 / 100])  # velocity_gain
    engine.handle(A.NoteOn(60, 95), None, r)  # a hit: posted at once
    assert len(ons(engine.mixer)) == 3
    assert (engine.cache.hits, engine.cache.misses) == (1, 2)


def test_note_off_before_the_render_lands_cancels_the_note(engine):
    r = Replies()
    engine.handle(A.NoteOn(62, 100), None, r)
    engine.handle(A.NoteOff(62), None, r)
    r.wait("/ready")
    assert ons(engine.mixer) == []


def test_render_blocking_shares_the_cache_and_renders_once_across_threads(engine):
    params = NoteParams(pitch=64, velocity=90)
    results = []
    threads = [threading.Thread(target=lambda: results.append(engine.render_blocking(params, 16000)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(a is results[0] for a in results)
    assert results[0].shape == (4 * 16000,)
    assert sum(engine.generator.renders.values()) == 1


def test_sync_is_answered_after_earlier_renders(engine):
    r = Replies()
    engine.handle(A.NoteOn(65, 100), None, r)
    engine.handle(A.Sync(3), None, r)
    assert r.got == []  # the render is still running
    r.wait("/synced")
    assert [a for a, _ in r.got] == ["/ready", "/synced"]
    engine.handle(A.Sync("now"), None, r)
    assert r.got[-1] == ("/synced", ["now"])


def test_prerender_reports_progress_and_a_timbre_change_supersedes_it(engine):
    engine.generator.delay_s = 0.0
    r = Replies()
    engine.handle(A.Prerender(60, 61), None, r)
    assert r.wait("/prerender/done") == [[10]]
    progress = [args for a, args in r.got if a == "/prerender/progress"]
    assert progress[0] == [0, 10] and progress[-1] == [10, 10]
    r2 = Replies()
    engine.generator.delay_s = 0.05
    engine.handle(A.Prerender(40, 59), None, r2)  # 100 notes
    engine.handle(A.SetLatentOne(0, 1.0), None, r2)
    done = r2.wait("/prerender/done", timeout=20)
    assert done[0][0] < 100  # stale notes were skipped, not rendered
    assert sum(engine.generator.renders.values()) < 10 + 100


def test_a_failing_generator_is_answered_with_error():
    class Broken:
        model_version = "broken"

        def render(self, params, sample_rate):
            raise RuntimeError("model not loaded")

    e = Engine(Broken(), Mixer(SR), NoClock(), NoteCache(2**20), workers=1)
    r = Replies()
    e.handle(A.NoteOn(60, 100), None, r)
    [args] = r.wait("/error")
    assert args[0] == "/note" and "model not loaded" in args[1]
    with pytest.raises(RuntimeError, match="model not loaded"):
        e.render_blocking(NoteParams(), SR)
    e.close()


def test_timbre_commands_change_the_note_rendered(engine):
    r = Replies()
    engine.handle(A.SetSource("synthetic"), None, r)
    engine.handle(A.SetQuality("dark", True), None, r)
    engine.handle(A.SetLatentOne(2, -3.0), None, r)
    assert engine.timbre.source == "synthetic" and engine.timbre.qualities == ("dark",)
    assert engine.timbre.latent_sample[2] == -3.0
    engine.handle(A.SetQualities(("bright",)), None, r)
    assert engine.timbre.qualities == ("bright",)
    engine.handle(A.Status(), None, r)
    [status] = r.wait("/status")
    assert len(status) == 9


def test_status_figures(engine):
    r = Replies()
    engine.handle(A.NoteOn(70, 100), None, r)
    r.wait("/ready")
    engine.handle(A.SetGain(-3.0), None, r)
    engine.handle(A.Status(), None, r)
    [status] = r.wait("/status")
    voices, notes, mb, hits, misses, queued, underruns, gain_db, rendering = status
    assert (notes, hits, misses, queued, underruns, rendering) == (1, 0, 1, 0, 0, 0)
    assert mb == pytest.approx(4 * SR * 4 / 2**20, rel=1e-3) and gain_db == -3.0


def test_a_restart_with_cache_dir_is_warm(tmp_path):
    gen = ToneGenerator(delay_s=0.0)
    e = Engine(gen, Mixer(SR), NoClock(), NoteCache(2**26, tmp_path), workers=1)
    r = Replies()
    e.handle(A.NoteOn(60, 100), None, r)
    r.wait("/ready")
    e.close()
    gen2 = ToneGenerator(delay_s=0.0)
    e2 = Engine(gen2, Mixer(SR), NoClock(), NoteCache(2**26, tmp_path), workers=1)
    e2.handle(A.NoteOn(60, 100), None, Replies())
    assert len(ons(e2.mixer)) == 1 and sum(gen2.renders.values()) == 0
    assert e2.cache.disk_hits == 1
    e2.close()


def test_auto_prerender_follows_timbre_changes_once_they_settle(engine, monkeypatch):
    import osc_server.engine as E

    monkeypatch.setattr(E, "AUTO_PRERENDER_DELAY_S", 0.1)
    engine.generator.delay_s = 0.0
    engine.auto_prerender = (60, 60)
    for v in (0.5, 1.0, 1.5):  # a knob sweep: one pre-render, for the last value
        engine.handle(A.SetLatentOne(1, v), None, Replies())
    time.sleep(1.0)
    assert sum(engine.generator.renders.values()) == 5  # pitch 60 x five layers
    assert engine.cache.contains(engine._note(60, 127)[0])


class FarClock:
    """Every timetag maps to a sample far ahead: a bundle scheduled for later."""

    def sample_at(self, t_wall: float) -> int:
        return 10**9


def test_a_full_schedule_refuses_scheduled_notes_but_never_immediate_ones():
    mixer = Mixer(SR, max_pending=16)
    e = Engine(ToneGenerator(delay_s=0.0), mixer, FarClock(), NoteCache(64 * 2**20), workers=1)
    try:
        e.render_blocking(NoteParams(pitch=60, velocity=100), SR)  # cached: note-ons post at once
        r = Replies()
        later = time.time() + 10
        for _ in range(16):
            e.handle(A.NoteOn(60, 100), later, r)
        with pytest.raises(A.CommandError, match="too many scheduled events"):
            e.handle(A.NoteOn(60, 100), later, r)
        e.handle(A.NoteOn(60, 100), None, r)  # immediate: always room
        e.handle(A.Panic(), None, r)
        assert mixer.n_scheduled == 16 and mixer.n_pending == 18
    finally:
        e.close()


def test_a_flood_of_prerender_requests_runs_one_at_a_time_and_starts_no_thread(engine):
    engine.generator.delay_s = 0.002
    r = Replies()
    threads = threading.active_count()
    for _ in range(300):  # one bundle's worth, and more
        engine.handle(A.Prerender(40, 80), None, r)
    assert threading.active_count() == threads  # no thread per message
    deadline = time.monotonic() + 60
    while len([1 for a, _ in r.got if a == "/prerender/done"]) < 300:
        assert time.monotonic() < deadline, f"{len(r.got)} replies"
        time.sleep(0.05)
    done = [args[0] for a, args in r.got if a == "/prerender/done"]
    assert done[-1] == 41 * 5 and done.count(0) >= 250  # the superseded ones say so at once
    assert sum(engine.generator.renders.values()) == 41 * 5  # each note once


class RecordingVoices:
    """Stands in for LiveVoices (the voice process) in this unit test of the engine: records calls."""

    def __init__(self):
        self.ons: list = []
        self.timbres: list = []

    def note_on(self, pitch, params, gain, target):
        self.ons.append((pitch, params, gain, target))

    def timbre(self, params):
        self.timbres.append(params)


def test_live_voices_get_the_current_timbres_params_made_once_per_key_and_layer():
    voices = RecordingVoices()
    e = Engine(ToneGenerator(), Mixer(SR), NoClock(), NoteCache(2**20), workers=1, voices=voices)
    try:
        reply = Replies()
        e.note_on(60, 100, None, reply)
        e.note_on(60, 101, None, reply)  # the same layer: the same params, made once
        e.note_on(62, 100, None, reply)
        e.handle(A.SetLatent([1.0] * 16), None, reply)
        e.note_on(60, 100, None, reply)
        (_, a, _, _), (_, b, _, _), (_, c, _, _), (_, d, _, _) = voices.ons
        assert a is b and a.pitch == 60 and c.pitch == 62
        assert a.latent_sample == tuple([0.0] * 16) and d.latent_sample == tuple([1.0] * 16)
        assert d == voices.timbres[-1].replace(pitch=60, velocity=a.velocity)
        assert "key" in vars(d)  # its key computed before it was sent
        assert not ons(e.mixer)  # nothing for the one-shot mixer
    finally:
        e.close()


def test_a_live_prerender_answers_from_the_voice_process_and_ends_if_it_dies():
    """With live voices the engine renders no one-shots for `/prerender`: it asks the voices to
    compute the notes (`warm` with an id) and answers /prerender/progress and /prerender/done
    from what they report; a voice process that dies ends the pre-renders it had."""

    class Voices:  # the voice process's side, reported by hand (tests/synth/test_hold.py has its own)
        on_warm = on_restart = None
        sounding = 0

        def __init__(self):
            self.warms = []

        def warm(self, notes, warm_id=None):
            self.warms.append((list(notes), warm_id))

        def timbre(self, params):
            pass

    voices = Voices()
    e = Engine(ToneGenerator(delay_s=0.05), Mixer(SR), NoClock(), NoteCache(64 * 2**20), workers=2, voices=voices)
    try:
        r = Replies()
        e.prerender(60, 61, r)
        (notes, warm_id), = voices.warms
        assert len(notes) == 10 and warm_id is not None and e.queued == 0  # no render job
        voices.on_warm(warm_id, 0, 10, 0)
        voices.on_warm(warm_id, 8, 10, 8)
        voices.on_warm(warm_id, 10, 10, 9)
        assert r.got == [("/prerender/progress", [0, 10]), ("/prerender/progress", [8, 10]),
                         ("/prerender/progress", [10, 10]), ("/prerender/done", [9])]
        voices.on_warm(warm_id, 10, 10, 10)  # (an id that ended: nothing more)
        assert len(r.got) == 4
        r2 = Replies()
        e.prerender(62, 62, r2)
        voices.on_warm(voices.warms[-1][1], 2, 5, 2)
        voices.on_restart()
        assert r2.got[-1] == ("/prerender/done", [2])
        assert e.cache.n_notes == 0
    finally:
        e.close()
