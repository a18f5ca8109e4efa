"""Sample-instrument export: the region maths, the loop and its crossfade on known signals, and the
exported instrument played by a real SFZ player (sfizz, through pysfizz): pitch between sampled
keys, sustain through the loop without a click or wobble, velocity like the live server, release."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from synth.export import (
    EXPORT_SAMPLE_RATE,
    crossfade_gains,
    find_loop,
    fit_release,
    key_ranges,
    loop_sample,
    sampled_keys,
    velocity_ranges,
)
from synth.fast_render import hz_to_midi, midi_to_hz
from synth.params import VELOCITY_LAYERS, NoteParams

SR = EXPORT_SAMPLE_RATE
PRESET = "dark-swell-acoustic"  # held near its peak at note-off, a release that falls (2 s to -60 dB)
KEYS = (57, 63, 3)               # sampled 57, 60, 63
LAYERS = (64, 127)
# Thresholds (the report prints the measured figures against these).
PITCH_TOL_CENTS = 10.0
SUSTAIN_TOL_DB = 6.0
WOBBLE_MAX_DB = 1.0
SEAM_STEP_RATIO = 1.2            # largest step while looping / largest step of the unlooped sample
VELOCITY_TOL_DB = 2.0
VELOCITY_WINDOW_S = (0.5, 1.0)  # before every loop (they start after 1 s): the same audio in both
RELEASE_FACTOR = 2.0
BLOCK = 256


# ---- pure functions ---------------------------------------------------------------------------------

def test_sampled_keys_include_both_ends():
    assert sampled_keys(21, 108, 3) == list(range(21, 109, 3))
    assert sampled_keys(57, 64, 3) == [57, 60, 63, 64]
    with pytest.raises(ValueError, match="pitches"):
        sampled_keys(60, 50, 3)


def test_key_ranges_cover_every_key_once_with_the_nearest_sample():
    keys = sampled_keys(21, 108, 3)
    ranges = key_ranges(keys, 21, 108)
    covered = [k for lo, hi in ranges for k in range(lo, hi + 1)]
    assert covered == list(range(21, 109))
    for key, (lo, hi) in zip(keys, ranges):
        for k in range(lo, hi + 1):
            assert abs(k - key) == min(abs(k - s) for s in keys)
    assert key_ranges([60, 62], 60, 62) == [(60, 60), (61, 62)]  # a tie goes to the upper sample


def test_velocity_ranges_are_the_servers_nearest_layer():
    ranges = velocity_ranges(VELOCITY_LAYERS)
    assert [(lo, hi) for _, lo, hi in ranges] == [(1, 37), (38, 62), (63, 87), (88, 113), (114, 127)]
    for layer, lo, hi in ranges:
        for v in range(lo, hi + 1):
            assert NoteParams(velocity=v).velocity_layer == layer


@pytest.mark.parametrize("r", [0.0, 0.5, 0.99, 1.0])
def test_crossfade_keeps_power_for_the_correlation(r):
    a, b = crossfade_gains(1000, r)
    assert np.allclose(a**2 + b**2 + 2 * r * a * b, 1.0)
    assert a[0] > 0.99 and b[-1] > 0.99 and np.all(np.diff(a) < 0) and np.all(np.diff(b) > 0)


def _tone(f0_hz: float, seconds: float = 4.0, noise: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    return (0.3 * np.sin(2 * np.pi * f0_hz * t) + 0.1 * np.sin(2 * np.pi * 2 * f0_hz * t + 1.0)
            + noise * rng.standard_normal(len(t)))


@pytest.mark.parametrize("f0_hz", [55.0, 261.6, 1046.5])
def test_loop_on_a_steady_tone_is_whole_periods_and_seamless(f0_hz):
    x = _tone(f0_hz, noise=0.002)
    loop = find_loop(x, SR, f0_hz)
    assert loop is not None and loop.correlation > 0.99
    assert loop.end < 3.0 * SR and loop.start > 1.0 * SR
    periods = loop.length * f0_hz / SR
    assert abs(periods - round(periods)) < 0.05, periods
    data = loop_sample(x, loop, 1.0, SR)
    played = np.concatenate([data[: loop.end]] + [data[loop.start : loop.end]] * 3)
    steps = np.abs(np.diff(played))
    assert steps.max() <= 1.05 * np.abs(np.diff(x)).max()
    assert len(data) >= loop.end + SR  # copies of the loop for the release


def test_a_wobbling_held_part_loops_without_the_wobble():
    """The model's held notes move by about a dB within 0.1 s: looped as they are, that repeats
    as a tremolo. The loop's level is held at its start's (flatten_loop)."""
    f0_hz = 261.6
    t = np.arange(4 * SR) / SR
    x = _tone(f0_hz, noise=0.0) * 10 ** (1.0 * np.sin(2 * np.pi * 7.3 * t) / 20)  # +-1 dB at 7.3 Hz
    loop = find_loop(x, SR, f0_hz)

    def wobble(data: np.ndarray) -> float:
        played = np.concatenate([data[loop.start : loop.end]] * 8)
        frame = int(round(5 * SR / f0_hz))  # whole periods (about 20 ms): a steady tone reads flat
        levels = 20 * np.log10(np.sqrt(np.mean(played[: len(played) // frame * frame].reshape(-1, frame) ** 2, 1)))
        return float(levels.max() - levels.min())

    as_is, held = wobble(loop_sample(x, loop, 1.0, SR)), wobble(loop_sample(x, loop, 1.0, SR, f0_hz))
    print(f"loop level range: {as_is:.2f} dB as rendered, {held:.2f} dB held")
    assert as_is > 1.0 and held < 0.5, (as_is, held)  # (the 1 dB limit of the loop test below, halved)


def test_a_decayed_note_gets_no_loop():
    x = _tone(440.0) * np.exp(-np.arange(4 * SR) / SR * 20)  # -174 dB by 1 s
    assert find_loop(x, SR, 440.0) is None


def test_fit_release_measures_an_exponential_decay():
    x = _tone(440.0)
    off = 3 * SR
    x[off:] *= 10 ** (-60 / 20 * np.arange(len(x) - off) / SR / 0.8)  # 60 dB in 0.8 s
    release = fit_release(x, SR)
    assert release.how == "60 dB" and release.t60_s == pytest.approx(0.8, abs=0.05)
    y = _tone(440.0)
    y[off:] *= 10 ** (-60 / 20 * np.arange(len(y) - off) / SR / 4.0)  # 15 dB in the 1 s left
    assert fit_release(y, SR).t60_s == pytest.approx(4.0, rel=0.1)


def test_cli_refuses_a_non_empty_folder_and_an_unknown_preset(tmp_path, capsys):
    from synth.cli import main

    out = tmp_path / "inst"
    out.mkdir()
    (out / "x.txt").write_text("keep me")
    assert main(["export", "--preset", PRESET, "--out", str(out), "--presets-dir", str(tmp_path)]) == 1
    assert "not empty" in capsys.readouterr().err and (out / "x.txt").read_text() == "keep me"
    assert main(["export", "--preset", "nope", "--out", str(tmp_path / "b"), "--presets-dir", str(tmp_path)]) == 1
    assert main(["export", "--preset", "../x", "--out", str(tmp_path / "b"), "--presets-dir", str(tmp_path)]) == 2
    assert not (tmp_path / "b").exists()


# ---- the instrument in a real SFZ player ------------------------------------------------------------

def level_db(x: np.ndarray, t0: float, t1: float) -> float:
    seg = x[int(t0 * SR) : int(t1 * SR)]
    return 20 * math.log10(max(float(np.sqrt(np.mean(seg**2))), 1e-12))


def f0_hz(x: np.ndarray, nominal_hz: float) -> float:
    """f0 from the strongest of the first 8 harmonics near k * nominal (+-50 cents): the peak of a
    Hann-windowed, 8x zero-padded spectrum, refined by a parabola through the log magnitudes."""
    n = len(x)
    spec = np.abs(np.fft.rfft(x * np.hanning(n), 8 * n))
    bin_hz = SR / (8 * n)
    best = (0.0, nominal_hz)
    for k in range(1, 9):
        lo, hi = (int(k * nominal_hz * 2 ** (c / 1200) / bin_hz) for c in (-50, 50))
        if hi + 1 >= len(spec):
            break
        i = lo + int(np.argmax(spec[lo:hi]))
        a, b, c = np.log(spec[i - 1 : i + 2] + 1e-30)
        peak = i + 0.5 * (a - c) / (a - 2 * b + c)
        if spec[i] > best[0]:
            best = (float(spec[i]), peak * bin_hz / k)
    return best[1]


_PLAYERS: dict[Path, object] = {}


def play(sfz: Path, key: int, velocity: int, hold_s: float, total_s: float) -> np.ndarray:
    """sfizz's left channel: `key` held `hold_s` then released, `total_s` in all.

    One player per .sfz, loaded from a copy that adds sfizz's `hint_ram_based=1` (whole samples in
    memory): with its default streaming, pysfizz 0.1.3 rendering offline left 29 of 300 notes
    silent while the two cores were busy (0 of 300 with the hint). The regions are the file's."""
    pysfizz = pytest.importorskip("pysfizz")
    if sfz not in _PLAYERS:
        ram = sfz.with_name(".test-ram-based.sfz")
        ram.write_text(sfz.read_text().replace("<control>\n", "<control>\nhint_ram_based=1\n", 1))
        player = pysfizz.Synth(SR, BLOCK)
        # quiet=False: pysfizz's quiet mode swaps file descriptors, which breaks under capsys.
        assert player.load_sfz_file(str(ram), quiet=False), sfz
        _PLAYERS[sfz] = player
    synth = _PLAYERS[sfz]._synth
    n_hold, n_total = int(hold_s * SR), int(total_s * SR)
    synth.note_on(0, key, velocity)
    blocks, done = [], 0
    while done < n_total:
        if done <= n_hold < done + BLOCK:
            synth.note_off(n_hold - done, key, 0)
        blocks.append(synth.render_block()[0])
        done += BLOCK
    synth.all_sound_off()
    return np.concatenate(blocks)[:n_total].astype(np.float64)


@pytest.fixture(scope="module")
def generator():
    from synth.generator import get_generator

    return get_generator()


@pytest.fixture(scope="module")
def preset():
    from synth.presets import PresetStore

    return PresetStore().load(PRESET)


@pytest.fixture(scope="module")
def instrument(tmp_path_factory, generator, preset):
    from synth.export import export_instrument

    out = tmp_path_factory.mktemp("export") / "inst"
    return export_instrument(preset, out, generator, sampled_keys(*KEYS), LAYERS)


@pytest.mark.slow
def test_sfz_file_and_samples(instrument, preset, generator):
    text = instrument.sfz_path.read_text()
    assert f"// preset: {preset.name}" in text and generator.model_version in text
    assert "bend_up=200 bend_down=-200" in text
    assert text.count("<region>") == 3 * len(LAYERS)
    for s in instrument.samples:
        info = sf.info(instrument.sfz_path.parent / "samples" / s.file)
        assert info.samplerate == SR and info.subtype == "PCM_24"
        assert s.loop is not None and s.loop.end < 3.0 * SR
        assert f"loop_start={s.loop.start} loop_end={s.loop.end - 1}" in text


@pytest.mark.slow
@pytest.mark.parametrize("key", [58, 59, 61, 62])
def test_pitch_between_sampled_keys(instrument, key):
    def cents_off(k: int) -> float:
        y = play(instrument.sfz_path, k, 127, 3.0, 3.0)[int(0.5 * SR) : int(2.5 * SR)]
        return 100 * (float(hz_to_midi(f0_hz(y, float(midi_to_hz(k))))) - k)

    cents = cents_off(key)
    sampled = next(s.key for s in instrument.samples if s.lokey <= key <= s.hikey)
    print(f"key {key}: pitch error {cents:+.2f} cents (its sample, key {sampled}, played at its own key: "
          f"{cents_off(sampled):+.2f} cents: the model's own tuning)")
    assert abs(cents) < PITCH_TOL_CENTS


@pytest.mark.slow
@pytest.mark.parametrize("key", [58, 60])
def test_sustains_through_the_loop_without_click_or_wobble(instrument, key):
    y = play(instrument.sfz_path, key, 127, 8.0, 8.0)
    sustain = level_db(y, 7.3, 7.7) - level_db(y, 1.8, 2.2)
    # Sample-to-sample steps while looping (4-7.9 s: many passes over the seam) against the
    # largest step of the sample's own unlooped held part (1-2.5 s).
    own_step = np.abs(np.diff(y[1 * SR : int(2.5 * SR)])).max()
    loop_step = np.abs(np.diff(y[4 * SR : int(7.9 * SR)])).max()
    def level_range(t0: float, t1: float) -> float:
        seg, frame = y[int(t0 * SR) : int(t1 * SR)], SR // 50
        levels = 20 * np.log10(np.sqrt(np.mean(seg[: len(seg) // frame * frame].reshape(-1, frame) ** 2, 1)))
        return float(levels.max() - levels.min())

    wobble = level_range(4.0, 7.9)
    print(f"key {key}: level at 7.5 s {sustain:+.2f} dB re 2 s; largest step looping {loop_step:.5f} vs "
          f"unlooped {own_step:.5f}; level range while looping {wobble:.2f} dB (20 ms frames; the "
          f"unlooped 1-2.5 s: {level_range(1.0, 2.5):.2f} dB)")
    assert abs(sustain) < SUSTAIN_TOL_DB
    assert loop_step <= SEAM_STEP_RATIO * own_step
    assert wobble < WOBBLE_MAX_DB


@pytest.mark.slow
def test_velocity_follows_the_live_server(tmp_path, generator, preset):
    """All five NSynth layers on one key: sfizz's level at two velocities against the server's rule
    (the note at the nearest layer, scaled by velocity_gain)."""
    from synth.export import export_instrument

    report = export_instrument(preset, tmp_path / "v", generator, [60], VELOCITY_LAYERS)

    def ours(v: int) -> float:
        note = preset.note(60, v)
        x = generator.render(note.replace(velocity=note.velocity_layer), SR) * note.velocity_gain
        return level_db(x, *VELOCITY_WINDOW_S)

    assert all(s.loop.start > VELOCITY_WINDOW_S[1] * SR for s in report.samples)
    pairs = [(127, 90), (100, 40), (70, 60), (113, 88)]
    for a, b in pairs:
        theirs = (level_db(play(report.sfz_path, 60, a, 3.0, 3.0), *VELOCITY_WINDOW_S)
                  - level_db(play(report.sfz_path, 60, b, 3.0, 3.0), *VELOCITY_WINDOW_S))
        expected = ours(a) - ours(b)
        print(f"velocity {a} vs {b}: sfizz {theirs:+.2f} dB, server {expected:+.2f} dB")
        assert abs(theirs - expected) < VELOCITY_TOL_DB


@pytest.mark.slow
def test_release_decays_like_the_model(instrument, generator, preset):
    key, hold = 60, 4.0
    sample = next(s for s in instrument.samples if s.key == key and s.layer == 127)
    model_t30 = sample.release.t60_s / 2
    y = play(instrument.sfz_path, key, 127, hold, hold + 2 * RELEASE_FACTOR * model_t30 + 0.5)
    frame = SR // 100
    levels = 20 * np.log10(np.sqrt(np.mean(y[: len(y) // frame * frame].reshape(-1, frame) ** 2, 1)) + 1e-12)
    off = int(hold * 100)
    ref = levels[off - 10 : off].mean()
    t30 = np.nonzero(levels[off:] < ref - 30)[0][0] / 100
    print(f"release: sfizz falls 30 dB in {t30:.2f} s; the model's 30 dB time {model_t30:.2f} s "
          f"({sample.release.how})")
    assert t30 <= RELEASE_FACTOR * model_t30
    assert t30 >= model_t30 / RELEASE_FACTOR


@pytest.mark.slow
def test_cli_exports_a_decaying_preset_without_loops(tmp_path, generator, capsys):
    """The command end to end: a plucked preset (decayed long before note-off) gets no loop and says
    so; the bend range is an option; sfizz loads the result."""
    from synth.cli import main

    out = tmp_path / "pluck"
    assert main(["export", "--preset", "bright-pluck-acoustic", "--out", str(out), "--pitches", "60-61",
                 "--every", "1", "--velocities", "127", "--bend", "1200", "--presets-dir", str(tmp_path)]) == 0
    assert "no loop (decayed note)" in capsys.readouterr().out
    sfz = out / "bright-pluck-acoustic.sfz"
    text = sfz.read_text()
    assert "bend_up=1200 bend_down=-1200" in text
    assert text.count("loop_mode=no_loop") == 2 and "// no loop: the note has decayed" in text
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["060_v127.wav", "061_v127.wav"]
    y = play(sfz, 61, 127, 1.0, 1.0)
    assert level_db(y, 0.0, 0.2) > -80
    # Written into a non-empty folder only with --force.
    assert main(["export", "--preset", "bright-pluck-acoustic", "--out", str(out), "--pitches", "60-60"]) == 1
    assert main(["export", "--preset", "bright-pluck-acoustic", "--out", str(out), "--pitches", "60-60",
                 "--velocities", "127", "--force"]) == 0
