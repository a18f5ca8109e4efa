"""The envelope tags' VCA (`synth.envelope`), checked with the data set's own tag analyzers."""

from __future__ import annotations

import numpy as np
import pytest

from synth.data.qualities import NoteAnalysis, fast_decay_score, long_release_score
from synth.envelope import MAX_BOOST_DB, apply_envelope_tags, level_db
from synth.models import FAST_DECAY_DB, LONG_RELEASE_HOLD_DB

SR = 16000
PITCH = 69  # 440 Hz


def tone(envelope_db) -> np.ndarray:
    """4 s of 440 Hz whose level (dB re full scale, per sample) follows envelope_db(t)."""
    t = np.arange(4 * SR) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t) * 10 ** (envelope_db(t) / 20)).astype(np.float32)


def sustained(t):
    """10 ms attack, held at 0 dB, note-off at 3 s, then -60 dB/s."""
    return np.where(t < 0.01, 20 * np.log10(np.maximum(t / 0.01, 1e-6)), np.where(t < 3, 0.0, -60.0 * (t - 3)))


def plucked(t):
    """10 ms attack, then -60 dB/s: gone (-120 dB) by 2 s."""
    return np.maximum(np.where(t < 0.01, 20 * np.log10(np.maximum(t / 0.01, 1e-6)), -60.0 * (t - 0.01)), -120.0)


def scores(audio):
    an = NoteAnalysis(audio, SR, PITCH)
    return fast_decay_score(an), long_release_score(an)


def test_no_envelope_tag_leaves_the_note_alone():
    a = tone(sustained)
    np.testing.assert_array_equal(apply_envelope_tags(a, SR, False, False), a)


def test_fast_decay_makes_a_sustained_note_decay():
    a = tone(sustained)
    assert scores(a)[0] == 0.0
    out = apply_envelope_tags(a, SR, True, False)
    fd, _ = scores(out)
    assert fd >= 1.0  # 30 dB down at least a second before note-off
    env_in, env_out = level_db(a, SR), level_db(out, SR)
    np.testing.assert_allclose(env_out[:2], env_in[:2], atol=0.5)  # the attack is kept
    assert env_out[250] <= env_in[250] - FAST_DECAY_DB + 1.0
    assert np.all(env_out <= env_in + 1e-6)  # a cap: never louder


def test_fast_decay_leaves_a_note_that_already_decays():
    a = tone(plucked)
    np.testing.assert_allclose(apply_envelope_tags(a, SR, True, False), a, atol=1e-7)


def ringing(t):
    """10 ms attack, then -20 dB/s: 60 dB down at note-off."""
    return np.where(t < 0.01, 20 * np.log10(np.maximum(t / 0.01, 1e-6)), -20.0 * (t - 0.01))


def test_long_release_gives_a_decayed_note_something_to_release():
    a = tone(ringing)
    assert scores(a)[1] == 0.0
    out = apply_envelope_tags(a, SR, False, True)
    _, lr = scores(out)
    assert lr >= 0.5
    env = level_db(out, SR)
    assert env[299] >= env[:300].max() - LONG_RELEASE_HOLD_DB - 1.0
    assert np.all(env <= level_db(a, SR) + MAX_BOOST_DB + 1e-6)


def test_long_release_does_not_raise_a_silent_note_from_the_dead():
    a = tone(plucked)  # -120 dB long before note-off
    out = apply_envelope_tags(a, SR, False, True)
    assert np.all(level_db(out, SR) <= level_db(a, SR) + MAX_BOOST_DB + 1e-6)
    assert scores(out)[1] == 0.0


def test_both_tags_decay_then_release_slowly():
    out = apply_envelope_tags(tone(sustained), SR, True, True)
    fd, lr = scores(out)
    assert fd > 0.5 and lr >= 0.5


@pytest.mark.parametrize("rate", [44100, 48000])
def test_same_shape_at_sound_card_rates(rate):
    t = np.arange(4 * rate) / rate
    a = (0.5 * np.sin(2 * np.pi * 440 * t) * 10 ** (sustained(t) / 20)).astype(np.float32)
    out = apply_envelope_tags(a, rate, True, False)
    assert out.dtype == np.float32 and out.shape == a.shape
    env = level_db(out, rate)
    assert env[200] <= env[:50].max() - 30.0
