"""Live voices at 44.1 kHz, where an 8 ms control frame is 352.8 samples (four frames of 353 and
one of 352 in every five): a sound card at 44.1 kHz through the real path (OSC over UDP -> the
voice process -> the ring -> PortAudio on a JACK dummy server at 44.1 kHz -> a JACK capture),
compared with the offline render of the same held note at 44.1 kHz."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.jack import JackDummy
from test_osc_live_voices import median_pitch_hz, midi_hz, open_voices

pytestmark = [pytest.mark.jack, pytest.mark.slow]

SR, BLOCK = 44100, 256


@pytest.fixture(scope="module")
def voices44():
    with JackDummy(SR, BLOCK, prefix="sg-44k") as name:
        yield from open_voices(name, SR, 20)


def test_a_held_note_at_44_1_khz_is_the_offline_note(voices44):
    from osc_server.audio import Stat
    from synth.generator import get_generator
    from synth.hold import render_held
    from synth.params import NoteParams

    v = voices44
    v.reset("synthetic")
    v.warm(60)
    late = int(v.server.mixer.stats[Stat.STREAM_LATE])
    f = v.now()
    v.client.send_msg("/note", 60, 100)
    time.sleep(2.2)
    v.client.send_msg("/note", 60, 0)
    v.capture.wait_until(f + int(2.2 * SR), timeout=15)  # (Voices.record counts 48 kHz samples)
    live = v.capture.read(f, f + int(2.2 * SR)).astype(np.float64) / 2  # (the port sums both channels)
    late = int(v.server.mixer.stats[Stat.STREAM_LATE]) - late
    offline = render_held(get_generator(), NoteParams(60, 100, "synthetic"), 2.5, SR).astype(np.float64)
    n = SR
    spectrum = np.fft.rfft(live[:n], 2 * n) * np.conj(np.fft.rfft(offline[:n], 2 * n))
    lag = int(np.argmax(np.fft.irfft(spectrum)[:n]))
    a = live[lag + int(0.1 * SR) : lag + int(1.9 * SR)]
    b = offline[int(0.1 * SR) : int(1.9 * SR)]
    residual_db = 10 * np.log10(np.mean((a - b) ** 2) / np.mean(b**2))
    pitch = median_pitch_hz(a, midi_hz(60), sample_rate=SR)
    cents = 1200 * np.log2(pitch / midi_hz(60))
    # A frame-length slip (a frame of the wrong length, a sample dropped or doubled at a frame
    # seam) is a phase jump: the largest sample step would stand out from the note's own.
    steps = np.abs(np.diff(a))
    print(f"44.1 kHz: lag {lag}, residual {residual_db:.1f} dB, pitch {pitch:.2f} Hz ({cents:+.1f} cents), "
          f"largest step {steps.max():.4f} vs 99.9th percentile {np.percentile(steps, 99.9):.4f}, {late} late blocks")
    assert np.sqrt(np.mean(a**2)) > 1e-3  # it sounds
    assert residual_db < -20.0, (residual_db, late)
    assert abs(cents) < 10.0, cents
    assert steps.max() < 3.0 * np.percentile(steps, 99.9), (steps.max(), late)
