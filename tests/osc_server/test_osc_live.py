"""The live server through the real audio path: OSC over UDP -> engine -> PortAudio stream on a
JACK dummy server -> a JACK capture client; assertions on what came out."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from osc_server import addresses as A
from tone import bundle, midi_hz, msg

pytestmark = [pytest.mark.jack, pytest.mark.slow]

SR, BLOCK = 48000, 256
THRESHOLD = 1e-3
MAX_ATTEMPTS = 30  # timing tests measure again when JACK itself glitched (see Capture.glitches)


def onset(audio: np.ndarray, threshold: float = THRESHOLD) -> int:
    above = np.flatnonzero(np.abs(audio) > threshold)
    assert above.size, f"no sound (peak {np.max(np.abs(audio)):.2g})"
    return int(above[0])


def peak_hz(audio: np.ndarray) -> float:
    """Frequency of the strongest FFT bin, refined by parabolic interpolation (Hann window)."""
    spec = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-20)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SR / audio.size


class Take:
    """One recorded try: `audio` from frame `f` (before the send), `t_sent` the wall time of the send."""

    def __init__(self, live, audio: np.ndarray, f: int, t_sent: float):
        self.live, self.audio, self.f, self.t_sent = live, audio, f, t_sent

    def latency_s(self, index: int) -> float:
        """Message sent -> the JACK cycle that carried audio[index], in wall time. (JACK's frame
        clock, `now()`, is an estimate that drifts from the cycles actually run on a loaded machine.)"""
        return self.live.capture.wall_time_of(self.f + index) - self.t_sent


def take(live, send, seconds: float, undo=None, before_s: float = 0.05) -> Take:
    # (`before_s` stays inside the 100 ms that `wait_silence` checked.)
    """Run `send()` and record `seconds` of output from `before_s` before it; again (after
    `undo()`) while JACK glitched (an xrun or a missed cycle) during the recording, which says
    nothing about the server."""
    for attempt in range(MAX_ATTEMPTS):
        glitches = live.capture.glitches
        f = live.capture.end_frame - int(before_s * SR)  # frames really captured, not JACK's estimate
        t_sent = time.perf_counter()
        send()
        audio = live.capture.read(f, f + int(seconds * SR))
        clean = live.capture.glitches == glitches
        if clean:
            return Take(live, audio, f, t_sent)
        if undo is not None:
            undo()
    raise AssertionError(f"JACK glitched in all {MAX_ATTEMPTS} tries: machine overloaded?")


def note_off_and_silence(live, pitch: int):
    def undo():
        live.client.send_msg("/note/off", pitch)
        live.wait_silence()
    return undo


def cache_note(live, pitch: int, velocity: int = 100) -> None:
    """Play the note once so it is cached (/sync: its render, if any, has landed)."""
    live.client.send_msg("/note", pitch, velocity)
    live.client.sync()
    live.client.send_msg("/note/off", pitch)


# How fast a note sounds is the benchmark's to hold (`bench --only server`: osc_to_audio_ms, one
# block); a timed test of it fails whenever the CI host is busy. The tests below hold what a slow
# machine cannot blur: with every render made to take RENDER_S, a note that sounds much sooner did
# not wait for one.
RENDER_S = 0.5
SOON_S = 0.06  # a dozen blocks: far from RENDER_S on any machine, far above a block on a busy one


def test_cached_note_has_its_pitch_and_sounds_without_waiting_for_a_render(live):
    live.reset()
    cache_note(live, 69)
    live.wait_silence()
    live.generator.delay_s = RENDER_S
    renders, misses = sum(live.generator.renders.values()), live.server.cache.misses
    undo = note_off_and_silence(live, 69)
    latencies = []
    for _ in range(4):
        t = take(live, lambda: live.client.send_msg("/note", 69, 100), 0.1, undo)
        latencies.append(t.latency_s(onset(t.audio)))
        undo()
    assert np.median(latencies) <= SOON_S, latencies
    assert min(latencies) > 0, latencies  # never before it was sent
    assert sum(live.generator.renders.values()) == renders and live.server.cache.misses == misses
    # The pitch (in cents) of what came out.
    t = take(live, lambda: live.client.send_msg("/note", 69, 100), 0.5, undo)
    cents = 1200 * np.log2(peak_hz(t.audio[onset(t.audio) + 480:]) / midi_hz(69))
    assert abs(cents) < 5, cents
    undo()
    live.generator.delay_s = 0.02


def test_missing_note_sounds_when_its_render_lands_and_is_rendered_once(live):
    live.reset()
    live.generator.delay_s = RENDER_S
    pitches = iter(range(120 - MAX_ATTEMPTS, 121))  # a new, uncached note for every try
    state = {}

    def send():
        state["pitch"] = pitch = next(pitches)
        state["renders"] = sum(live.generator.renders.values())
        live.client.send_msg("/note", pitch, 100)
        live.client.send_msg("/note", pitch, 101)  # same layer (100): same render, a second voice

    t = take(live, send, RENDER_S + 0.6, lambda: (live.client.send_msg("/panic"), live.wait_silence()))
    pitch = state["pitch"]
    live.client.wait_for("/ready", lambda a: a == [pitch, 100])
    live.generator.delay_s = 0.02
    start = onset(t.audio)
    assert t.latency_s(start) >= RENDER_S, t.latency_s(start)  # not before the render could land
    # ... but when it did, not a second render later (the render, its hand-over from the render
    # process and a few blocks: 50-60 ms over the render on the 2-vCPU box, 2026-12-01).
    assert t.latency_s(start) <= RENDER_S + 0.25, t.latency_s(start)
    assert sum(live.generator.renders.values()) - state["renders"] == 1
    cents = 1200 * np.log2(peak_hz(t.audio[start + 480:start + 480 + SR // 2]) / midi_hz(pitch))
    assert abs(cents) < 5, cents
    live.client.send_msg("/note/off", pitch)


def test_velocity_scales_a_cached_layer(live):
    live.reset()
    cache_note(live, 60, 100)
    live.wait_silence()
    live.client.take("/ready")
    undo = note_off_and_silence(live, 60)
    levels = {}
    for velocity in (100, 90):  # both play the 100 layer; 90 at 90/100 of its level
        t = take(live, lambda: live.client.send_msg("/note", 60, velocity), 0.35, undo)
        start = onset(t.audio)
        blocks = np.abs(t.audio[start + 480:start + 480 + 9600]).reshape(-1, 240).max(axis=1)
        levels[velocity] = 20 * np.log10(np.median(blocks))
        undo()
    assert levels[90] - levels[100] == pytest.approx(20 * np.log10(90 / 100), abs=0.05)
    assert live.client.take("/ready") == []  # nothing was rendered for velocity 90


def test_timetagged_bundles_play_at_their_times_whatever_the_arrival_order(live):
    live.reset()
    cache_note(live, 64)
    cache_note(live, 67)
    live.wait_silence()
    for attempt in range(MAX_ATTEMPTS):
        glitches = live.capture.glitches
        t0 = time.time() + 0.1
        # Sent in reverse order of their timetags: on 67 at +120 ms, off 64 at +40 ms, on 64 at 0.
        packets = [
            bundle(t0 + 0.120, msg("/note", 67, 100)),
            bundle(t0 + 0.040, msg("/note/off", 64)),
            bundle(t0, msg("/note", 64, 100)),
        ]
        f = live.capture.end_frame
        for p in packets:
            live.client.send(p)
        audio = live.capture.read(f, f + int(0.45 * SR))
        clean = live.capture.glitches == glitches
        time.sleep(max(0.0, t0 + 0.2 - time.time()))  # after the scheduled note-on, whatever happened
        live.client.send_msg("/note/off", 67)
        live.wait_silence()
        if clean:
            break
    assert clean, "JACK glitched in every try: machine overloaded?"
    first = onset(audio)
    # The note off at +40 ms fades (20 ms) to silence before +120 ms.
    gap = audio[first + int(0.065 * SR):first + int(0.115 * SR)]
    assert np.max(np.abs(gap)) < 1e-4, np.max(np.abs(gap))
    second = first + int(0.065 * SR) + onset(audio[first + int(0.065 * SR):])
    spacing_ms = 1e3 * (second - first) / SR
    assert spacing_ms == pytest.approx(120.0, abs=1.0), spacing_ms
    # And the release began 40 ms after the first onset (to the millisecond).
    seg = np.abs(audio[first:first + int(0.065 * SR)])
    sustain = np.max(seg[int(0.030 * SR):int(0.039 * SR)])
    release_start = int(0.030 * SR) + int(np.flatnonzero(
        np.maximum.accumulate(seg[int(0.030 * SR):][::-1])[::-1] < 0.98 * sustain)[0])
    assert 1e3 * release_start / SR == pytest.approx(40.0, abs=1.5)
    # The second note's pitch.
    cents = 1200 * np.log2(peak_hz(audio[second + 480:second + 480 + SR // 5]) / midi_hz(67))
    assert abs(cents) < 5


def test_note_off_fades_to_silence_without_a_click(live):
    live.reset()
    cache_note(live, 57)
    live.wait_silence()

    def note_on_again():
        live.client.send_msg("/note", 57, 127)
        time.sleep(0.2)

    note_on_again()
    t = take(live, lambda: live.client.send_msg("/note/off", 57), 0.3, note_on_again, before_s=0.1)
    sustained = t.audio[:int(0.1 * SR)]
    assert np.min(np.abs(sustained).reshape(-1, 480).max(axis=1)) > 0.1  # sounding before the note-off
    end = int(np.flatnonzero(np.abs(t.audio) > 1e-5)[-1])
    # Silent after the 20 ms fade that starts in the cycle after the message (how soon that cycle
    # comes is the benchmark's to hold; SOON_S of slack here, against a 4 s note left ringing).
    assert t.latency_s(end) <= 0.020 + SOON_S, t.latency_s(end)
    assert np.max(np.abs(t.audio[end + 1:])) < 1e-5
    fade = t.audio[int(0.1 * SR):end + 2]
    # No click: the fade's steepest sample-to-sample step is no larger than the note's own.
    assert np.max(np.abs(np.diff(fade))) <= 1.05 * np.max(np.abs(np.diff(sustained)))


def test_refused_messages_are_answered_with_error(live):
    live.reset()
    c = live.client
    cases = [
        (msg("/note", "C4", 100), "/note", "pitch"),
        (msg("/note", 200, 100), "/note", "pitch: expected an integer 9..120"),
        (msg("/note", 60, 100.5), "/note", "velocity"),
        (msg("/note", 60), "/note", "expected pitch velocity"),
        (msg("/latent/3", 9.0), "/latent/3", "latent_sample[3]: expected a number in [-7, 7]"),
        (msg("/latent", *[0.0] * 15), "/latent", "expected 16 numbers"),
        (msg("/source", "brass"), "/source", "source: expected one of acoustic, electronic, synthetic"),
        (msg("/quality/shiny", 1), "/quality/shiny", "unknown quality"),
        (msg("/gain", 100.0), "/gain", "db: expected a number in [-80, 24]"),
        (msg("/nope", 1), "/nope", "unknown address"),
        (b"\x00\x01garbage", A.MALFORMED, "not an OSC packet"),
        (b"/note\x00\x00\x00,ii\x00\x00\x00", A.MALFORMED, "not an OSC packet"),  # ints missing
    ]
    for data, address, reason in cases:
        c.send(data)
        args = c.wait_for("/error")
        assert args[0] == address and reason in args[1], (data, args)
    # A valid message gets no error; /status answers with its figures.
    c.send_msg("/note", 60.0, 100.0)  # Pure Data sends floats
    c.send_msg("/note/off", 60)
    c.send_msg("/status")
    status = c.wait_for("/status")
    assert len(status) == 9 and c.take("/error") == []
    c.send_msg("/sync", 7)
    assert c.wait_for("/synced") == [7]


def test_reply_port_redirects_replies(live):
    live.reset()
    from tone import Client

    listener = Client(live.server.address)  # only used to receive on its port
    c = live.client
    c.send_msg("/reply/port", listener.sock.getsockname()[1])
    c.send_msg("/status")
    assert len(listener.wait_for("/status")) == 9
    c.send_msg("/reply/port", 0)
    c.send_msg("/status")
    assert len(c.wait_for("/status")) == 9
    listener.close()


def test_flood_of_random_and_mutated_packets_is_answered_and_the_server_keeps_playing(live):
    live.reset()
    rng = random.Random(1234)
    live.generator.delay_s = 0.0
    seeds = [msg("/note", 60, 100), msg("/note/off", 60), msg("/latent/2", 1.5), msg("/gain", -6.0),
             msg("/quality/bright", 1), msg("/status"), msg("/source", "electronic"),
             msg("/latent", *[0.5] * 16), bundle(time.time() + 0.05, msg("/note", 62, 80), msg("/note/off", 62))]
    packets = []
    for i in range(3000):
        if i % 3 == 0:
            packets.append(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64))))
        else:
            p = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 and p:
                    p[rng.randrange(len(p))] = rng.randrange(256)
                elif op == 1 and p:
                    del p[rng.randrange(len(p)):][: rng.randrange(1, 8)]
                else:
                    p[rng.randrange(len(p) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
            packets.append(bytes(p))
    packets.append(b"/big\x00\x00\x00\x00,b\x00\x00" + (20000).to_bytes(4, "big") + bytes(20000))  # > 8192 bytes

    # What the pure parser says about each packet: every refused one must be answered.
    expected_errors = 0
    for p in packets:
        try:
            items = A.decode_packet(p)
        except A.MalformedPacket:
            expected_errors += 1
            continue
        for item in items:
            try:
                A.parse_message(item.address, item.args)
            except A.CommandError:
                expected_errors += 1
    assert expected_errors > 1000

    received_before = live.server.transport.received
    blocks_before = int(live.server.mixer.cpu[2])
    c = live.client
    for i, p in enumerate(packets):
        c.send(p)
        if i % 200 == 0:
            time.sleep(0.01)  # a burst of 200 packets every ~10 ms: ~20000 packets/s
    c.sync(timeout=60)
    assert live.server.transport.received - received_before == len(packets) + 1
    errors = c.take("/error")
    # Timetag errors ("at most 60 s ahead") may add to the parser's count, never subtract.
    assert len(errors) >= expected_errors, (len(errors), expected_errors)
    # The callback kept up during the flood: its typical block took under a fifth of a block, and
    # 99 % of them less than a block. (Not PortAudio's under-run count: on JACK it counts any
    # client's xrun, this test's too. The 99th percentile under a fifth of a block was a speed
    # figure, and a busy CI host made it 2 ms: the callback's cost is the benchmark's to hold.)
    mixer = live.server.mixer
    blocks = int(mixer.cpu[2]) - blocks_before
    assert blocks > 0
    times = np.roll(mixer.block_times, -(int(mixer.cpu[2]) % mixer.block_times.size))[-min(blocks, 4096):]
    assert np.median(times) < 0.2 * BLOCK / SR, np.percentile(times, [50, 99, 100])
    assert np.percentile(times, 99) < BLOCK / SR, np.percentile(times, [50, 99, 100])
    live.generator.delay_s = 0.02

    # Still playing: a cached note sounds at once, at its pitch.
    live.reset()
    cache_note(live, 72)
    live.wait_silence()
    live.generator.delay_s = RENDER_S
    misses = live.server.cache.misses
    t = take(live, lambda: c.send_msg("/note", 72, 100), 0.5, note_off_and_silence(live, 72))
    start = onset(t.audio)
    assert t.latency_s(start) <= SOON_S and live.server.cache.misses == misses, t.latency_s(start)
    live.generator.delay_s = 0.02
    cents = 1200 * np.log2(peak_hz(t.audio[start + 480:]) / midi_hz(72))
    assert abs(cents) < 5
    c.send_msg("/note/off", 72)


def test_prerender_reports_progress_and_fills_the_cache(live):
    live.reset()
    live.generator.delay_s = 0.0
    c = live.client
    c.send_msg("/latent/5", 2.0)  # a fresh timbre: nothing cached yet
    c.send_msg("/prerender", 60, 63)
    assert c.wait_for("/prerender/done", timeout=30) == [20]
    progress = c.take("/prerender/progress")
    assert progress[0] == [0, 20] and progress[-1] == [20, 20]
    assert len(c.take("/ready")) == 20
    misses = live.server.cache.misses
    # Velocity 64 -> the 75 layer, already there: it sounds at once, without a render.
    t = take(live, lambda: c.send_msg("/note", 61, 64), 0.1, note_off_and_silence(live, 61))
    assert t.latency_s(onset(t.audio)) <= SOON_S
    assert live.server.cache.misses == misses
    c.send_msg("/note/off", 61)
    live.generator.delay_s = 0.02
