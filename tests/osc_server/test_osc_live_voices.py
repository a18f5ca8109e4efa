"""Live voices (`--voice-mode live`) through the real audio path: OSC over UDP -> engine -> the
voice process (shipped weights) -> shared-memory ring -> PortAudio stream on a JACK dummy server
-> a JACK capture client. Measured as a listener would: levels, pitch, spectral centroid, steps."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from bench.jack import Capture, portaudio_jack_device
from tone import Client, ToneGenerator

pytestmark = [pytest.mark.jack, pytest.mark.slow]

SR, BLOCK = 48000, 256
SILENT = 1e-5


def rms_db(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20))


def levels_db(x: np.ndarray, window_s: float = 0.01) -> np.ndarray:
    n = int(window_s * SR)
    k = len(x) // n
    frames = np.asarray(x[: k * n], np.float64).reshape(k, n)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)


def pitch_hz(audio: np.ndarray, near_hz: float, sample_rate: int = SR) -> float:
    """The strongest peak within 10 % of `near_hz` (Hann, 8x zero padding, parabolic)."""
    n_fft = 8 * len(audio)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = np.flatnonzero((freqs > 0.9 * near_hz) & (freqs < 1.1 * near_hz))
    k = band[np.argmax(spectrum[band])]
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-20)
    return float((k + 0.5 * (a - c) / (a - 2 * b + c)) * sample_rate / n_fft)


def centroid_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1.0 / SR)
    return float(np.sum(freqs * spectrum) / np.sum(spectrum))


def midi_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12.0)


class Voices:
    def __init__(self, server, capture: Capture, client: Client):
        self.server, self.capture, self.client = server, capture, client

    def now(self) -> int:
        return self.capture.end_frame

    def record(self, f0: int, seconds: float) -> np.ndarray:
        n = int(seconds * self.capture.sample_rate)
        self.capture.wait_until(f0 + n, timeout=seconds + 10)
        return self.capture.read(f0, f0 + n)

    def hold_without_gaps(self, pitch: int, velocity: int, seconds: float, tries: int = 6) -> np.ndarray:
        """Hold a note for `seconds` and return the capture (the stream's channels summed, halved).

        A block the voice process did not fill in time, or a cycle the capture missed, puts a gap
        in the recording that no render has (they are counted and measured elsewhere: the late
        blocks in bench voices, the missed cycles by the capture), and the note after it is out of
        step with a render. (An xrun that cost the capture no cycle is no gap.) Such a try is played again, up to `tries` times in all. (On a noisy host
        one try in three or four had one: a residual of -21 to +1 dB against the offline note, all
        of it after the gap.)"""
        for _ in range(tries):
            late, missed = self.late_blocks(), self.capture.gaps
            f = self.now()
            self.client.send_msg("/note", pitch, velocity)
            time.sleep(seconds)
            self.client.send_msg("/note", pitch, 0)
            live = self.record(f, seconds).astype(np.float64) / 2
            gaps = self.late_blocks() - late + self.capture.gaps - missed
            self.wait_silence()
            if not gaps:
                return live
        raise AssertionError(f"every try had a gap: {gaps} late blocks or missed capture cycles in the last")

    def late_blocks(self) -> int:
        """Blocks the voice process has not filled in time so far (Stat.STREAM_LATE)."""
        from osc_server.audio import Stat

        return int(self.server.mixer.stats[Stat.STREAM_LATE])

    def wait_silence(self, max_s: float = 15.0) -> None:
        deadline = time.monotonic() + max_s
        while True:
            f = self.capture.end_frame
            if np.max(np.abs(self.capture.read(f - 4800, f))) < SILENT:
                return
            assert time.monotonic() < deadline, "output never went silent"
            time.sleep(0.05)

    def reset(self, source: str = "synthetic") -> None:
        c = self.client
        for m in (("/panic",), ("/sustain", 0), ("/mode", "poly"), ("/bend", 0.0), ("/pressure", 0.0),
                  ("/source", source), ("/qualities",), ("/latent", *[0.0] * 16)):
            c.send_msg(*m)
        time.sleep(0.2)
        self.wait_silence()
        with c._cond:
            c.replies.clear()

    def warm(self, *pitches: int, velocity: int = 100) -> None:
        """Play each note once, briefly, so its controls are kept (a later note-on starts at once)."""
        for p in pitches:
            self.client.send_msg("/note", p, velocity)
        time.sleep(0.6)
        for p in pitches:
            self.client.send_msg("/note", p, 0)
        self.wait_silence()


@pytest.fixture(scope="module")
def voices(jack_dummy):
    yield from open_voices(jack_dummy, SR, 40)


def open_voices(jack_name: str, sample_rate: int, seconds: float):
    """`serve --voice-mode live` (8 voices) on that JACK server, its output wired to a capture:
    yields `Voices`, then closes everything."""
    from osc_server.server import LiveServer, ServerConfig

    device = portaudio_jack_device()
    cap = Capture(jack_name, seconds=seconds)
    assert cap.sample_rate == sample_rate
    before = {p.name for p in cap.client.get_ports(is_audio=True, is_output=True)}
    server = LiveServer(ToneGenerator(), ServerConfig(port=0, device=device, sample_rate=sample_rate, blocksize=BLOCK,
                                                      cache_mb=64, jack_fallback=False, voice_mode="live",
                                                      live_voices=8)).start()
    for p in [p.name for p in cap.client.get_ports(is_audio=True, is_output=True) if p.name not in before]:
        cap.client.connect(p, cap.port)
    client = Client(server.address)
    yield Voices(server, cap, client)
    client.close()
    server.close()
    cap.close()


def test_a_held_note_sustains_for_its_whole_hold_then_releases_smoothly_to_silence(voices):
    voices.reset("synthetic")  # organ-like at latent 0: a sustaining timbre
    voices.warm(60)
    f = voices.now()
    voices.client.send_msg("/note", 60, 100)
    time.sleep(12.0)
    voices.client.send_msg("/note", 60, 0)
    audio = voices.record(f, 19.5)  # the synthetic release ends about 6 s after its note-off
    assert np.all(np.isfinite(audio))
    on = int(np.flatnonzero(np.abs(audio) > 1e-4)[0])
    at = lambda s: rms_db(audio[on + int(s * SR) : on + int((s + 0.2) * SR)])  # noqa: E731
    held_2_5, held_11_5 = at(2.5), at(11.5)
    print(f"held level at 2.5 s {held_2_5:.1f} dB, at 11.5 s {held_11_5:.1f} dB")
    assert held_2_5 > -50.0, held_2_5
    assert abs(held_11_5 - held_2_5) <= 6.0, (held_2_5, held_11_5)
    # Every 0.5 s of the hold within 6 dB of the 2.5 s level: no dropout, no fade.
    for s in np.arange(2.5, 11.5, 0.5):
        assert abs(at(s) - held_2_5) <= 6.0, (s, at(s), held_2_5)
    # The release: longer than 100 ms, no 10 ms step over 12 dB on its way, then silence.
    tail = audio[on + int(11.95 * SR):]
    lv = levels_db(tail)
    off = int(round((12.0 - 11.95) / 0.01))  # the 10 ms window where the note-off lands (roughly)
    ref = lv[max(0, off - 10) : off].max()
    after_100ms = lv[off + 12]
    print(f"release: held {ref:.1f} dB, 120 ms after note-off {after_100ms:.1f} dB")
    assert after_100ms > ref - 40.0, (ref, after_100ms)  # still sounding after 100 ms
    loud = lv > ref - 80.0
    steps = np.abs(np.diff(lv))[loud[1:] & loud[:-1]]
    assert steps.max() <= 12.0, steps.max()
    assert np.max(np.abs(audio[-SR // 2 :])) < SILENT  # it ended


def median_pitch_hz(audio: np.ndarray, near_hz: float, window_s: float = 0.1, sample_rate: int = SR) -> float:
    """The median of `pitch_hz` over consecutive windows: one block the ring did not cover (its
    gap jumps the phase, which moves one long window's peak by a few cents) moves one window only."""
    n = int(window_s * sample_rate)
    return float(np.median([pitch_hz(audio[i : i + n], near_hz, sample_rate)
                            for i in range(0, len(audio) - n + 1, n)]))


def aligned_residual(live: np.ndarray, offline: np.ndarray, sample_rate: int) -> tuple:
    """The live note starts inside its first frame, at the block after the message: align it
    with the offline render (cross-correlation over the first second). Returns (lag in samples,
    the live and the offline 0.1-1.9 s, the residual of one against the other in dB).

    The lag is negative when the note's first frame began before the block it started in (its
    first samples were never played). For a note this periodic the highest correlation can be a
    period or two away from the true lag (its peaks differ by a few parts in a thousand): of the
    highest peaks, the one with the smallest residual is taken. (The highest alone, searched
    from 0 on, gave -28 to -35 dB in about half of the tries: the lag was -256 or -128, the peak
    taken 111 or 55, one or two periods of C4 away.)"""
    n = sample_rate
    spectrum = np.fft.rfft(live[:n], 2 * n) * np.conj(np.fft.rfft(offline[:n], 2 * n))
    correlation = np.fft.irfft(spectrum, 2 * n)
    peaks = np.flatnonzero((correlation > np.roll(correlation, 1)) & (correlation >= np.roll(correlation, -1)))
    i, j = int(0.1 * sample_rate), int(1.9 * sample_rate)
    fits = []
    for k in peaks[np.argsort(correlation[peaks])[-8:]]:
        lag = int(k) - 2 * n if k >= n else int(k)  # circular: the upper half holds the negative lags
        if lag + i < 0 or lag + j > live.size:
            continue
        a, b = live[lag + i : lag + j], offline[i:j]
        fits.append((float(10 * np.log10(np.mean((a - b) ** 2) / np.mean(b**2))), lag, a, b))
    residual_db, lag, a, b = min(fits, key=lambda fit: fit[0])
    return lag, a, b, residual_db


def test_bend_moves_a_sounding_note_by_its_cents(voices):
    voices.reset("synthetic")
    voices.warm(57)
    late = voices.late_blocks()
    f = voices.now()
    voices.client.send_msg("/note", 57, 100)
    time.sleep(1.0)
    voices.client.send_msg("/bend", 200.0)
    time.sleep(1.0)
    audio = voices.record(f, 2.0)
    voices.client.send_msg("/note", 57, 0)
    late = voices.late_blocks() - late
    before = median_pitch_hz(audio[int(0.45 * SR) : int(0.95 * SR)], midi_hz(57))
    after = median_pitch_hz(audio[int(1.45 * SR) : int(1.95 * SR)], midi_hz(59))
    moved = 1200.0 * np.log2(after / before)
    print(f"bend 200: {before:.2f} Hz -> {after:.2f} Hz = {moved:+.1f} cents ({late} late blocks)")
    assert abs(moved - 200.0) <= 5.0, (moved, f"{late} blocks the voice process was late for")
    voices.client.send_msg("/bend", 0.0)


def test_latent_moves_a_sounding_notes_timbre_without_a_level_dip(voices):
    voices.reset("synthetic")
    voices.warm(60)
    f = voices.now()
    voices.client.send_msg("/note", 60, 100)
    time.sleep(2.0)
    voices.client.send_msg("/latent", *([0.0, 0.0, 5.0] + [0.0] * 12 + [-5.0]))
    time.sleep(1.5)
    audio = voices.record(f, 3.5)
    voices.client.send_msg("/note", 60, 0)
    c_before = centroid_hz(audio[int(1.2 * SR) : int(1.9 * SR)])
    c_after = centroid_hz(audio[int(2.8 * SR) : int(3.4 * SR)])
    lv = levels_db(audio[int(1.5 * SR) : int(3.4 * SR)], 0.02)
    before_db, after_db = lv[:20].mean(), lv[-20:].mean()
    dip = min(before_db, after_db) - lv.min()
    print(f"latent: centroid {c_before:.0f} -> {c_after:.0f} Hz, level {before_db:.1f} -> {after_db:.1f} dB, "
          f"dip {dip:.1f} dB")
    assert abs(np.log2(c_after / c_before)) > 0.2, (c_before, c_after)  # moved by more than 15 %
    assert dip <= 6.0, dip


def test_pressure_makes_a_sounding_note_louder(voices):
    voices.reset("synthetic")
    voices.warm(60)
    f = voices.now()
    voices.client.send_msg("/note", 60, 100)
    time.sleep(1.5)
    voices.client.send_msg("/pressure", 1.0)
    time.sleep(1.0)
    audio = voices.record(f, 2.5)
    voices.client.send_msg("/note", 60, 0)
    gain = rms_db(audio[int(1.9 * SR) : int(2.4 * SR)]) - rms_db(audio[int(0.9 * SR) : int(1.4 * SR)])
    print(f"pressure 1: {gain:+.1f} dB")
    assert gain > 3.0, gain
    voices.client.send_msg("/pressure", 0.0)


def test_the_sustain_pedal_holds_released_notes_until_it_lifts(voices):
    voices.reset("electronic")  # releases within a second: the pedal has to be what holds it
    voices.warm(64)
    f = voices.now()
    voices.client.send_msg("/sustain", 1)
    voices.client.send_msg("/note", 64, 100)
    time.sleep(1.0)
    voices.client.send_msg("/note", 64, 0)  # key up, pedal down
    time.sleep(2.0)
    voices.client.send_msg("/sustain", 0)
    time.sleep(3.0)
    audio = voices.record(f, 6.0) / 2  # (the capture port sums the stream's two channels)
    from synth.generator import get_generator
    from synth.hold import render_held
    from synth.params import NoteParams

    held = rms_db(audio[int(0.6 * SR) : int(0.9 * SR)])
    pedalled = rms_db(audio[int(2.6 * SR) : int(2.9 * SR)])
    after = rms_db(audio[int(5.5 * SR) : int(6.0 * SR)])
    # The same note with its key held all along, and released at key-up without the pedal
    # (offline renders of what the server plays).
    key_held = render_held(get_generator(), NoteParams(64, 100, "electronic"), 3.0, SR)
    by_key = rms_db(key_held[int(2.6 * SR) : int(2.9 * SR)].astype(np.float64))
    released = render_held(get_generator(), NoteParams(64, 100, "electronic"), 1.0, SR)
    released = np.pad(released, (0, max(0, int(3 * SR) - len(released))))  # (it may end before 2.9 s)
    unpedalled = rms_db(released[int(2.6 * SR) : int(2.9 * SR)].astype(np.float64))
    print(f"pedal: held {held:.1f} dB, 1.6 s after key-up {pedalled:.1f} dB (key held: {by_key:.1f} dB, "
          f"released without the pedal: {unpedalled:.1f} dB), 2.5 s after the pedal {after:.1f} dB")
    # Held by the pedal: as if its key were held, far above the same note released without it.
    assert abs(pedalled - by_key) <= 3.0 and pedalled > unpedalled + 20.0, (pedalled, by_key, unpedalled)
    assert after < held - 50.0, (held, after)


def test_mono_mode_plays_legato_without_a_new_attack(voices):
    voices.reset("synthetic")
    voices.warm(60)
    voices.client.send_msg("/mode", "mono")
    voices.client.send_msg("/glide", 0.0)
    f = voices.now()
    voices.client.send_msg("/note", 60, 100)
    time.sleep(1.0)
    voices.client.send_msg("/note", 64, 100)  # legato: 60 still held
    time.sleep(1.0)
    voices.client.send_msg("/note", 64, 0)  # back to 60
    time.sleep(1.0)
    audio = voices.record(f, 3.0)
    voices.client.send_msg("/note", 60, 0)
    p1 = median_pitch_hz(audio[int(0.5 * SR) : int(0.95 * SR)], midi_hz(60))
    p2 = median_pitch_hz(audio[int(1.4 * SR) : int(1.95 * SR)], midi_hz(64))
    p3 = median_pitch_hz(audio[int(2.4 * SR) : int(2.95 * SR)], midi_hz(60))
    print(f"legato: {p1:.1f} -> {p2:.1f} -> {p3:.1f} Hz")
    assert abs(1200 * np.log2(p2 / p1) - 400.0) < 10.0, (p1, p2)
    assert abs(1200 * np.log2(p3 / p1)) < 10.0, (p1, p3)
    # No new attack: around each key change (sent then, sounding a frame or two later) the 20 ms
    # level never dips more than 6 dB below the lower of the levels before and after it (the
    # model plays the new key at its own level: E4 came out 3 dB below C4 here).
    lv = levels_db(audio, 0.02)
    for change_s in (1.0, 2.0):
        c = int(change_s * 50)
        before, after = lv[c - 10 : c - 1].mean(), lv[c + 15 : c + 24].mean()
        low = lv[c - 1 : c + 15].min()
        print(f"key change at {change_s} s: {before:.1f} dB -> {after:.1f} dB, lowest between {low:.1f} dB")
        assert low > min(before, after) - 6.0, (change_s, before, after, low)
    assert voices.server.voices.sounding <= 1
    voices.client.send_msg("/mode", "poly")


def test_a_known_note_starts_at_once(voices):
    from osc_server.voices import C_HEADS

    voices.reset("synthetic")
    voices.warm(67, velocity=127)  # (the same velocity layer: the same note)
    heads = int(voices.server.voices.control[C_HEADS])
    latencies = []
    for _ in range(6):
        voices.wait_silence()
        f = voices.now()
        t_sent = time.perf_counter()
        voices.client.send_msg("/note", 67, 127)
        audio = voices.record(f, 0.3)
        voices.client.send_msg("/note", 67, 0)
        above = np.flatnonzero(np.abs(audio) > 1e-4)
        assert above.size, "no sound"
        latencies.append(voices.capture.wall_time_of(f + int(above[0])) - t_sent)
    print("first sound (ms):", [round(1e3 * x, 1) for x in latencies])
    # How soon (a block or two) is the benchmark's to hold (`bench --only voices`:
    # cached_first_sound_ms); a timed test of it fails whenever the CI host is busy. Here: the
    # note starts at once, not after a render of its 4 s (~100 ms) or a wait for a later block.
    assert np.median(latencies) <= 0.03, latencies
    assert min(latencies) > -0.001, latencies
    # Its first frames came from the mixer (the note's head), the rest from the voice process.
    assert int(voices.server.voices.control[C_HEADS]) - heads == 6


def test_a_prerender_computes_the_live_voices_controls_and_renders_no_one_shots(voices):
    """`/prerender` with live voices: each note's controls are computed in the voice process (a
    note of them then starts without the networks); its progress and done come from there; the
    render processes render no 4 s one-shots, which live voices never play."""
    voices.reset("electronic")
    c = voices.client
    c.send_msg("/latent", *([0.0] * 15 + [2.5]))  # a timbre nobody played yet
    before = voices.server.engine.status_values()
    c.send_msg("/prerender", 60, 62)
    done = c.wait_for("/prerender/done", timeout=30)
    assert done == [15]
    progress = [args for a, args in c.replies if a == "/prerender/progress"]
    assert progress[-1] == [15, 15] and all(total == 15 for _, total in progress)
    after = voices.server.engine.status_values()
    assert after[1] == before[1] and after[5] == 0, (before, after)  # no one-shot cached or queued
    assert voices.server.voices.process.is_alive()


def test_a_note_whose_controls_were_computed_is_answered_with_ready(voices):
    """Live voices: a note-on of a note the voice process did not know sounds at once, and /ready
    comes when its own controls were computed (as a one-shot's comes when it landed); a note it
    knows sends none."""
    voices.reset("synthetic")
    c = voices.client
    c.send_msg("/latent", *([0.0] * 14 + [-2.5, 0.0]))  # a timbre nobody played yet
    c.send_msg("/note", 64, 90)
    assert c.wait_for("/ready", timeout=10) == [64, 100]  # (the velocity layer it was computed at)
    c.send_msg("/note", 64, 0)
    voices.wait_silence()
    with c._cond:
        c.replies.clear()
    c.send_msg("/note", 64, 90)  # known now
    time.sleep(0.5)
    c.send_msg("/note", 64, 0)
    c.sync()
    assert [args for a, args in c.replies if a == "/ready"] == []


def test_live_controls_check_their_values(voices):
    c = voices.client
    for address, args, field in (("/bend", (5000.0,), "cents"), ("/pressure", (1.5,), "value"),
                                 ("/sustain", (2,), "down"), ("/mode", ("chords",), "mode"),
                                 ("/glide", (-1.0,), "ms"), ("/note/bend", (60, "x"), "cents")):
        c.send_msg(address, *args)
        reply = c.wait_for("/error", lambda a, address=address: a[0] == address)
        assert field in reply[1], reply
    assert voices.server.voices.process.is_alive()


def test_the_live_note_is_the_note_render_hold_writes(voices):
    """Offline = live: `sound-generator render --hold` (synth.hold.render_held) and the voice
    process run the same HeldNote; what the sound card got matches it, once aligned."""
    from synth.generator import get_generator
    from synth.hold import render_held
    from synth.params import NoteParams

    voices.reset("synthetic")
    voices.warm(60)
    offline = render_held(get_generator(), NoteParams(60, 100, "synthetic"), 2.5, SR).astype(np.float64)
    live = voices.hold_without_gaps(60, 100, 2.2)
    lag, a, b, residual_db = aligned_residual(live, offline, SR)
    for segment in ((0.1, 0.5), (0.5, 1.0), (1.0, 1.9)):
        i, j = int(segment[0] * SR), int(segment[1] * SR)
        d = live[lag + i : lag + j] - offline[i:j]
        print(segment, round(10 * np.log10(np.mean(d**2) / np.mean(offline[i:j] ** 2)), 1))
    print(f"live vs render --hold: lag {lag} samples, residual {residual_db:.1f} dB (live {10 * np.log10(np.mean(a**2) + 1e-20):.1f} dB, offline {10 * np.log10(np.mean(b**2)):.1f} dB)")
    # The issue asks for -40 dB (to noise). Measured through the server, on tries with no gap:
    # -78.6 dB at lag 0, -76.0 at -128, -72.7 at -256 (the first millisecond's fade-in and its
    # reverb). A wrong note or timbre is 0 dB or worse.
    assert residual_db < -40.0, residual_db


def test_a_killed_voice_process_is_replaced_and_the_instrument_plays_on(voices):
    import signal as signals

    live = voices.server.voices
    before = live.restarts
    old = live.process.pid
    os.kill(old, signals.SIGKILL)
    deadline = time.monotonic() + 120
    while live.restarts == before:
        assert time.monotonic() < deadline, "no new voice process within 120 s"
        time.sleep(0.2)
    assert live.process.pid != old and live.process.is_alive()
    voices.reset("electronic")
    f = voices.now()
    voices.client.send_msg("/note", 62, 100)
    time.sleep(0.8)
    voices.client.send_msg("/note", 62, 0)
    audio = voices.record(f, 0.8)
    level = rms_db(audio[int(0.3 * SR) :])
    print(f"after a restart: {level:.1f} dB")
    assert level > -60.0, level
