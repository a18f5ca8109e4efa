"""Live voices at 44.1 kHz, where an 8 ms control frame is 352.8 samples (four frames of 353 and
one of 352 in every five): a sound card at 44.1 kHz through the real path (OSC over UDP -> the
voice process -> the ring -> PortAudio on a JACK dummy server at 44.1 kHz -> a JACK capture),
compared with the offline render of the same held note at 44.1 kHz."""

from __future__ import annotations


import numpy as np
import pytest

from bench.jack import JackDummy
from test_osc_live_voices import aligned_residual, median_pitch_hz, midi_hz, open_voices

pytestmark = [pytest.mark.jack, pytest.mark.slow]

SR, BLOCK = 44100, 256


@pytest.fixture(scope="module")
def voices44():
    with JackDummy(SR, BLOCK, prefix="sg-44k") as name:
        yield from open_voices(name, SR, 20)


def test_a_held_note_at_44_1_khz_is_the_offline_note(voices44):
    from synth.generator import get_generator
    from synth.hold import render_held
    from synth.params import NoteParams

    v = voices44
    v.reset("synthetic")
    v.warm(60)
    live = v.hold_without_gaps(60, 100, 2.2)  # (a try with a late block or a missed capture cycle is played again)
    # The live note's frames fall on the server's grid, where frames are 353 or 352 samples in a
    # pattern of five: it is the offline note rendered from the same place in the pattern. (From
    # another place its noise grains lie a sample or so apart: about -35 dB.)
    fits = []
    for grid_frame in range(5):
        offline = render_held(get_generator(), NoteParams(60, 100, "synthetic"), 2.5, SR,
                              grid_frame=grid_frame).astype(np.float64)
        fits.append(aligned_residual(live, offline, SR) + (grid_frame,))
    lag, a, b, residual_db, grid_frame = min(fits, key=lambda fit: fit[3])
    pitch = median_pitch_hz(a, midi_hz(60), sample_rate=SR)
    cents = 1200 * np.log2(pitch / midi_hz(60))
    # A frame-length slip (a frame of the wrong length, a sample dropped or doubled at a frame
    # seam) is a phase jump: the largest sample step would stand out from the note's own.
    steps = np.abs(np.diff(a))
    print(f"44.1 kHz: grid frame {grid_frame}, lag {lag}, residual {residual_db:.1f} dB "
          f"({', '.join(f'{fit[3]:.1f}' for fit in fits)} dB at each), pitch {pitch:.2f} Hz ({cents:+.1f} cents), "
          f"largest step {steps.max():.4f} vs 99.9th percentile {np.percentile(steps, 99.9):.4f}")
    assert np.sqrt(np.mean(a**2)) > 1e-3  # it sounds
    assert residual_db < -40.0, residual_db
    assert abs(cents) < 10.0, cents
    assert steps.max() < 3.0 * np.percentile(steps, 99.9), steps.max()
