"""synth.streaming: chunked rendering equals one pass, physics of what a live voice plays, and the
same sound as the offline renderer (`FastRenderer`) on the same controls. Numpy only (no TF)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from synth import fast_render, streaming
from synth.fast_render import MAX_FREQUENCY_HZ, N_HARMONICS, N_NOISE_BANDS, TRAIN_SAMPLE_RATE
from synth.models import DECODER_FRAME_RATE
from test_fast_render import measure_pitch_hz, relative_error_db

RATES = (44100, 48000)
CHUNK_SIZES = (1, 3, 7, 13)
FRAME_RATE = DECODER_FRAME_RATE
KEYS = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")


def note_controls(n_frames: int, seed: int = 0, f0_hz: float = 220.0, noise: bool = True,
                  top_harmonic: int = N_HARMONICS) -> dict:
    """Physical controls of a plausible note at the decoder's 125 frames/s: vibrato, smooth
    random envelopes and spectra, a 40 ms attack from silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / FRAME_RATE
    f0 = f0_hz * 2 ** (0.3 * np.sin(2 * np.pi * 5.0 * t) / 12)

    def smooth(x):
        return scipy.ndimage.gaussian_filter1d(x, 3.0, axis=0)

    amplitude = 0.3 * np.exp(smooth(rng.normal(size=n_frames))) * np.minimum(1.0, t / 0.04)
    k = np.arange(1, N_HARMONICS + 1)
    dist = np.exp(smooth(rng.normal(size=(n_frames, N_HARMONICS)))) / k
    dist[:, top_harmonic:] = 0.0
    dist *= fast_render.harmonic_mask(f0, N_HARMONICS, MAX_FREQUENCY_HZ)
    dist /= dist.sum(axis=1, keepdims=True)
    magnitudes = 0.02 * np.exp(smooth(rng.normal(size=(n_frames, N_NOISE_BANDS)))) if noise \
        else np.zeros((n_frames, N_NOISE_BANDS))
    as32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    return {"f0_hz": as32(f0), "amplitude": as32(amplitude), "harmonic_distribution": as32(dist),
            "noise_magnitudes": as32(magnitudes)}


def impulse_response(seed: int = 3, gain: float = 0.05, n: int = TRAIN_SAMPLE_RATE) -> np.ndarray:
    """A reverb like the learned ones: decaying noise at 16 kHz, first tap 0 (wet part only)."""
    ir = gain * np.random.default_rng(seed).normal(size=n) * np.exp(-np.arange(n) / 1600.0)
    ir[0] = 0.0
    return ir.astype(np.float32)


def args(controls: dict, frames=slice(None)) -> tuple:
    return tuple(controls[key][frames] for key in KEYS)


def render_in_chunks(synth, controls: dict, chunk_frames: int) -> np.ndarray:
    n_frames = len(controls["f0_hz"])
    pieces = []
    for start in range(0, n_frames, chunk_frames):
        frames = slice(start, min(n_frames, start + chunk_frames))
        expected_length = synth.chunk_samples(frames.stop - frames.start)
        pieces.append(synth.render_chunk(*args(controls, frames)))
        assert pieces[-1].shape[-1] == expected_length and pieces[-1].dtype == np.float32
    return np.concatenate(pieces, axis=-1)


def with_first_frame_repeated(controls: dict) -> dict:
    """The offline renderer's input that a stream of `controls` plays (see synth.streaming)."""
    return {key: np.concatenate([value[:1], value]) for key, value in controls.items()}


# ---------------------------------------------------------------------------------------------
# Chunked = one pass.


@pytest.mark.parametrize("sample_rate", RATES)
def test_chunks_of_any_size_render_the_same_audio_as_one_pass(sample_rate):
    """Harmonics, noise and reverb; 121 frames (at 44.1 kHz not a whole number of samples)."""
    controls = note_controls(121, seed=1)
    ir = impulse_response()

    def make():
        return streaming.StreamingSynth(sample_rate, ir, seed=7)

    one_pass = make().render_chunk(*args(controls))
    assert one_pass.shape == (-(-121 * sample_rate // FRAME_RATE),)
    assert np.all(np.isfinite(one_pass)) and np.max(np.abs(one_pass)) > 0.1
    for chunk_frames in CHUNK_SIZES:
        chunked = render_in_chunks(make(), controls, chunk_frames)
        # Measured: at most 1.5e-7 (float32 rounding: the reverb's FFTs have other sizes).
        assert np.max(np.abs(chunked - one_pass)) < 1e-5, chunk_frames


def stack(notes: list[dict], frames=slice(None)) -> tuple:
    """Controls of several voices for a bank: [n_voices, k, ...] each."""
    return tuple(np.stack([note[key][frames] for note in notes]) for key in KEYS)


@pytest.mark.parametrize("sample_rate", RATES)
def test_bank_voices_are_independent_streams(sample_rate):
    """A bank renders each voice as a one-voice synth with its seed would, whatever the chunk
    sizes; a voice started later (reset) is a note of its own, at the bank's clock."""
    notes = [note_controls(40, seed=s, f0_hz=f) for s, f in ((1, 110.0), (2, 330.0), (3, 1000.0))]
    bank = streaming.StreamingSynthBank(3, sample_rate, seeds=[11, 12, 13])
    chunked = np.concatenate([bank.render_chunk(*stack(notes, slice(start, start + 7)))
                              for start in range(0, 40, 7)], axis=-1)
    for voice, (note, seed) in enumerate(zip(notes, (11, 12, 13))):
        alone = streaming.StreamingSynth(sample_rate, seed=seed).render_chunk(*args(note))
        assert np.max(np.abs(chunked[voice] - alone)) < 1e-5
    # Voice 1 starts a new note at frame 40 of the bank's clock.
    bank.reset(1, seeds=21)
    later = note_controls(13, seed=4)
    held = [{key: np.repeat(note[key][-1:], 13, axis=0) for key in KEYS} for note in notes]
    out = bank.render_chunk(*stack([held[0], later, held[2]]))
    alone = streaming.StreamingSynth(sample_rate, seed=21)
    alone.bank.frame_index = 40  # the same clock: at 44.1 kHz frames differ in length
    assert np.max(np.abs(out[1] - alone.render_chunk(*args(later)))) < 1e-5


def test_idle_voices_cost_nothing_and_restart_fresh():
    """render_chunk(voices=...) renders only the listed voices; a voice left out starts afresh."""
    note = note_controls(20, seed=5)
    bank = streaming.StreamingSynthBank(8, 48000, seeds=list(range(8)))
    out = bank.render_chunk(*stack([note], slice(0, 10)), voices=[5])
    assert out.shape == (1, 10 * 384)
    assert bank.silent_voices().tolist() == [True] * 5 + [False] + [True] * 2
    bank.render_chunk(*stack([note, note], slice(10, 12)), voices=[0, 1])
    assert bank.silent_voices()[5]  # left out: idle
    bank.reset(5, seeds=5)
    again = bank.render_chunk(*stack([note], slice(0, 10)), voices=[5])
    assert np.max(np.abs(again - out)) < 1e-5


# ---------------------------------------------------------------------------------------------
# Physics, against independent references.


@pytest.mark.parametrize("sample_rate", RATES)
@pytest.mark.parametrize("f0_hz", (55.0, 440.0, 1760.0))
def test_sine_has_the_right_pitch_level_and_waveform(sample_rate, f0_hz):
    n_frames = 250  # 2 s
    dist = np.zeros((n_frames, N_HARMONICS), np.float32)
    dist[:, 0] = 1.0
    synth = streaming.StreamingSynth(sample_rate)
    f0 = np.full(n_frames, f0_hz, np.float32)
    audio = render_in_chunks(synth, {"f0_hz": f0, "amplitude": np.full(n_frames, 0.5, np.float32),
                                     "harmonic_distribution": dist,
                                     "noise_magnitudes": np.zeros((n_frames, N_NOISE_BANDS), np.float32)}, 3)
    cents = 1200 * np.log2(measure_pitch_hz(audio, sample_rate, f0_hz) / f0_hz)
    assert abs(cents) < 0.01  # measured: < 1e-5 cent
    level_db = 20 * np.log10(np.sqrt(np.mean(audio**2)) * np.sqrt(2) / 0.5)
    assert abs(level_db) < 0.01
    reference = 0.5 * np.sin(2 * np.pi * f0_hz * np.arange(len(audio)) / sample_rate)
    assert relative_error_db(audio, reference) < -100  # measured -117 dB: the tables' images


@pytest.mark.parametrize("sample_rate", RATES)
def test_jumping_f0_is_phase_continuous_across_frames_and_chunks(sample_rate):
    """f0 jumps at every frame (200..400 Hz), chunks of one frame: the sine never steps more
    than its highest frequency allows, at chunk boundaries or anywhere else."""
    rng = np.random.default_rng(1)
    n_frames = 300
    dist = np.zeros((n_frames, 4), np.float32)
    dist[:, 0] = 1.0
    controls = {"f0_hz": rng.uniform(200.0, 400.0, size=n_frames).astype(np.float32),
                "amplitude": np.ones(n_frames, np.float32), "harmonic_distribution": dist,
                "noise_magnitudes": np.zeros((n_frames, 3), np.float32)}
    synth = streaming.StreamingSynth(sample_rate, n_harmonics=4, n_noise_bands=3)
    audio = render_in_chunks(synth, controls, 1)
    step = np.abs(np.diff(audio))
    assert np.max(step) < 1.02 * 2 * np.pi * 400.0 / sample_rate
    boundaries = streaming.frame_start_sample(np.arange(1, n_frames), sample_rate, FRAME_RATE)
    assert np.max(step[boundaries - 1]) < 1.02 * 2 * np.pi * 400.0 / sample_rate


@pytest.mark.parametrize("sample_rate", RATES)
def test_nothing_above_the_band_limit(sample_rate):
    """Glide 200 -> 2000 Hz in 1 s with 64 flat harmonics that nobody masked, then flat noise:
    the smooth mask leaves nothing above 8 kHz but the glide's one-frame overshoot (< 8.2 kHz)
    and the wavetable's images (measured 3e-7 of the power above 8.3 kHz); the noise's grains,
    cross-faded in time, leak a little past their 8 kHz edge (measured 2e-6, as the TensorFlow
    path's, which tests/synth/test_fast_render.py bounds by 1e-4)."""
    n_frames = 125
    f0 = np.geomspace(200.0, 2000.0, n_frames).astype(np.float32)
    for amplitude, noise, bound in ((0.5, 0.0, 1e-6), (0.0, 0.05, 1e-5)):
        controls = {"f0_hz": f0, "amplitude": np.full(n_frames, amplitude, np.float32),
                    "harmonic_distribution": np.full((n_frames, 64), 1 / 64, np.float32),
                    "noise_magnitudes": np.full((n_frames, 65), noise, np.float32)}
        audio = render_in_chunks(streaming.StreamingSynth(sample_rate, seed=0), controls, 2)
        f, psd = scipy.signal.welch(audio, sample_rate, nperseg=2048)
        assert psd[f > 8300].sum() < bound * psd.sum()
        assert psd[(f > 6000) & (f < 7500)].sum() > 1e-2 * psd.sum()


def test_silence_in_silence_out_and_the_reverb_rings_out_to_exact_zero():
    ir = impulse_response(n=4000)
    synth = streaming.StreamingSynth(48000, ir, seed=0)
    zeros = note_controls(5)
    zeros["amplitude"][:] = 0.0
    zeros["noise_magnitudes"][:] = 0.0
    assert np.all(synth.render_chunk(*args(zeros)) == 0.0) and synth.is_silent()
    note = note_controls(30, seed=2)
    assert np.max(np.abs(synth.render_chunk(*args(note)))) > 0.05
    assert not synth.is_silent()
    tail = synth.tail_samples()
    assert 12000 <= tail <= 12000 + 4 * 768  # the 0.25 s response at 48 kHz, plus blocks
    rung = []
    while not synth.is_silent():
        rung.append(synth.render_chunk(*args(zeros, slice(0, 1))))
        assert synth.tail_samples() <= tail
    rung = np.concatenate(rung)
    assert np.max(np.abs(rung[:6000])) > 1e-3  # the tail rings ...
    assert len(rung) <= tail + 384
    after = synth.render_chunk(*args(zeros))
    assert np.all(after == 0.0)  # ... then is exactly silent


def test_extreme_controls_stay_finite():
    synth = streaming.StreamingSynth(44100, impulse_response(n=1000), seed=0)
    n_frames = 40
    f0 = np.where(np.arange(n_frames) % 2, 0.0, 30000.0).astype(np.float32)
    audio = synth.render_chunk(f0, np.full(n_frames, 1e6, np.float32), np.ones((n_frames, 64), np.float32),
                               np.full((n_frames, 65), 1e3, np.float32))
    assert np.all(np.isfinite(audio))


def test_half_frame_easing_reaches_the_new_value_at_mid_frame():
    """ease_fraction=0.5 (DDSP-VST): a control change completes half-way through the frame."""
    n_samples, segment, ramp, *_ = streaming.chunk_geometry(0, 2, 48000, FRAME_RATE, 0.5, 768)
    assert n_samples == 768
    np.testing.assert_allclose(ramp[:192], np.arange(192) / 192, atol=1e-6)
    assert np.all(ramp[192:384] == 1.0) and ramp[384] == 0.0
    # A sine switched on in frame 1 is at full level from sample 384 + 192 on.
    dist = np.zeros((2, 4), np.float32)
    dist[:, 0] = 1.0
    synth = streaming.StreamingSynth(48000, n_harmonics=4, n_noise_bands=3, ease_fraction=0.5)
    audio = synth.render_chunk(np.full(2, 1000.0, np.float32), np.array([0.0, 1.0], np.float32), dist,
                               np.zeros((2, 3), np.float32))
    reference = np.sin(2 * np.pi * 1000.0 * np.arange(768) / 48000)
    assert np.all(audio[:384] == 0.0)
    np.testing.assert_allclose(audio[576:], reference[576:], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# The offline renderer's sound.


@pytest.mark.parametrize("sample_rate", RATES)
def test_harmonic_part_and_reverb_match_the_offline_renderer(sample_rate):
    """Same controls (no noise: its draw differs), dry and with the learned reverb. The stream is
    the offline rendering of the controls with the first frame repeated; the offline renderer
    synthesises at 16 kHz and resamples, the stream synthesises at the card's rate: two routes to
    the same band-limited sound. Measured at both rates: dry -66 dB waveform and -115 dB spectral
    difference; with the reverb -43.5 dB and -40 dB, the pre-ringing of the resampled impulse
    response that a causal filter drops (see the next-but-one test)."""
    controls = note_controls(250, seed=6, f0_hz=110.0, noise=False)
    edge = sample_rate // 50  # the offline render's circular resampling rings at its ends
    for ir, waveform_db, spectrum_db in ((None, -60, -90), (impulse_response(), -40, -35)):
        stream = render_in_chunks(streaming.StreamingSynth(sample_rate, ir), controls, 1)
        offline = fast_render.FastRenderer(ir, TRAIN_SAMPLE_RATE, FRAME_RATE, MAX_FREQUENCY_HZ).render(
            *args(with_first_frame_repeated(controls)), sample_rate)[: len(stream)]
        assert relative_error_db(stream[edge:-edge], offline[edge:-edge]) < waveform_db
        f, p_stream = scipy.signal.welch(stream, sample_rate, nperseg=4096)
        _, p_offline = scipy.signal.welch(offline, sample_rate, nperseg=4096)
        below = f < 7500
        difference_db = 10 * np.log10(np.sum((p_stream[below] - p_offline[below]) ** 2)
                                      / np.sum(p_offline[below] ** 2))
        assert difference_db < spectrum_db


@pytest.mark.parametrize("sample_rate", RATES)
def test_noise_level_matches_the_offline_renderer(sample_rate):
    """Same band magnitudes, independent draws: band powers agree within 1 dB."""
    controls = note_controls(250, seed=4)
    controls["amplitude"][:] = 0.0
    stream = render_in_chunks(streaming.StreamingSynth(sample_rate, seed=1), controls, 3)
    offline = fast_render.FastRenderer(None, TRAIN_SAMPLE_RATE, FRAME_RATE, MAX_FREQUENCY_HZ).render(
        *args(with_first_frame_repeated(controls)), sample_rate, np.random.default_rng(2))
    f, p_stream = scipy.signal.welch(stream, sample_rate, nperseg=1024)
    _, p_offline = scipy.signal.welch(offline, sample_rate, nperseg=1024)
    for lo in range(250, 7500, 500):
        band = (f >= lo) & (f < lo + 500)
        assert abs(10 * np.log10(p_stream[band].sum() / p_offline[band].sum())) < 1.0
    assert p_stream[f > 8300].sum() < 1e-4 * p_stream.sum()


@pytest.mark.parametrize("sample_rate", RATES)
def test_a_retake_renders_the_last_chunk_again_as_if_its_controls_had_been_those(sample_rate):
    """`retake` from the state saved before the last chunk, with other controls for some voices:
    those voices' samples, and every later chunk, are what a bank given those controls in the
    first place renders (noise draws included); the other voices go on untouched."""
    notes = [note_controls(30, seed=s, f0_hz=f) for s, f in ((1, 110.0), (2, 330.0), (3, 1000.0))]
    bent = {key: value.copy() for key, value in notes[1].items()}
    bent["f0_hz"][20:] *= 2 ** (200 / 1200)
    bent["amplitude"][20:] *= 1.5
    taken, reference = (streaming.StreamingSynthBank(5, sample_rate, seeds=[11, 12, 13, 14, 15]) for _ in range(2))
    slots = [4, 0, 2]
    for start, stop in ((0, 7), (7, 19)):
        taken.render_chunk(*stack(notes, slice(start, stop)), voices=slots)
        reference.render_chunk(*stack(notes, slice(start, stop)), voices=slots)
    state = taken.save_state()
    first = taken.render_chunk(*stack(notes, slice(19, 21)), voices=slots)
    again = taken.retake(state, [0], *stack([bent], slice(19, 21)))
    expected = reference.render_chunk(*stack([notes[0], bent, notes[2]], slice(19, 21)), voices=slots)
    assert np.max(np.abs(again[0] - expected[1])) < 1e-6
    assert np.max(np.abs(first[1] - expected[1])) > 0.01  # (the retake changed something)
    later = taken.render_chunk(*stack([notes[0], bent, notes[2]], slice(21, 30)), voices=slots)
    assert np.max(np.abs(later - reference.render_chunk(*stack([notes[0], bent, notes[2]], slice(21, 30)),
                                                       voices=slots))) < 1e-6
    with pytest.raises(ValueError, match="retake"):  # not from before the last chunk any more
        taken.retake(state, [0], *stack([bent], slice(19, 21)))
    state = taken.save_state()
    taken.render_chunk(*stack(notes, slice(29, 30)), voices=slots)
    with pytest.raises(ValueError, match="voices"):  # slot 1 played no part in it
        taken.retake(state, [1], *stack([bent], slice(29, 30)))


@pytest.mark.parametrize("sample_rate,pieces", [(48000, (384,) * 6), (44100, (353, 353, 352, 353, 353, 352))])
def test_the_reverb_processes_a_piece_again_from_its_checkpoint(sample_rate, pieces):
    """checkpoint, process, restore, process other input: as if the other input had come first,
    at frame-sized pieces (at 44.1 kHz, across partition blocks)."""
    ir = impulse_response(n=16000)
    taken, reference = (streaming.StreamingReverb(ir, sample_rate) for _ in range(2))
    rng = np.random.default_rng(1)
    x = [rng.normal(size=n).astype(np.float32) for n in pieces]
    other = rng.normal(size=pieces[3]).astype(np.float32)
    saved = taken.checkpoint()
    for i, piece in enumerate(x):
        if i == 3:
            taken.checkpoint(saved)
            taken.process(piece)
            taken.restore(saved)
            piece = other
        out = taken.process(piece)
        assert np.max(np.abs(out - reference.process(other if i == 3 else piece))) < 1e-6
    tail = np.zeros(4000, np.float32)
    assert np.max(np.abs(taken.process(tail) - reference.process(tail))) < 1e-6


@pytest.mark.parametrize("sample_rate,pieces,late", [(48000, (384,) * 8, 2 * 384 + 100),
                                                      (44100, (353, 353, 352, 353, 353, 352, 353, 353), 900),
                                                      (48000, (384,) * 8, 50)])
def test_input_added_to_the_past_reverberates_as_if_it_had_come_in_its_time(sample_rate, pieces, late):
    """add_past: a note that joins frames already processed (a live voice's first frames). The
    wet part over those samples, plus what the reverb put out for them, plus everything after, is
    the reverb of the note given in its time: the whole response, across partition blocks."""
    ir = impulse_response(n=16000)
    taken, reference = (streaming.StreamingReverb(ir, sample_rate, n_channels=2) for _ in range(2))
    rng = np.random.default_rng(2)
    total = sum(pieces)
    base = rng.normal(size=(2, total)).astype(np.float32) * 0.1
    note = np.zeros((2, total), np.float32)
    joined = sum(pieces[:5])  # the note is added when 5 pieces are processed, `late` samples into its time
    note[:, joined - late :] = rng.normal(size=(2, total - joined + late))
    expected = np.concatenate([reference.process((base + note)[:, a : a + n])
                               for a, n in zip(np.cumsum((0,) + pieces[:-1]), pieces)], axis=-1)
    out = [taken.process(base[:, :a]) for a in (pieces[0],)] + \
        [taken.process(base[:, a : a + n]) for a, n in zip(np.cumsum(pieces[:4]), pieces[1:5])]
    out = np.concatenate(out, axis=-1)
    past = taken.add_past(note[:, joined - late : joined])
    out[:, joined - late :] += past + note[:, joined - late : joined]
    rest = [taken.process((base + note)[:, a : a + n]) for a, n in zip(np.cumsum((joined,) + pieces[5:-1]), pieces[5:])]
    out = np.concatenate([out] + rest, axis=-1)
    assert np.max(np.abs(out - expected)) < 1e-5
    tail = np.zeros((2, 20000), np.float32)
    assert np.max(np.abs(taken.process(tail) - reference.process(tail))) < 1e-5
    # (Without the delay line's share, the response's taps past a few blocks would be missing.)
    assert np.max(np.abs(expected[:, -1000:])) > 0.01


# ---------------------------------------------------------------------------------------------
# The reverb alone.


@pytest.mark.parametrize("block_sizes", (None, (64,), (64, 512)))
@pytest.mark.parametrize("ir_rate,sample_rate", [(16000, 16000), (16000, 44100)])
def test_streaming_reverb_is_direct_convolution(block_sizes, ir_rate, sample_rate):
    """Odd piece sizes, two channels, one or two partition levels: dry + the impulse response
    (at the output rate) convolved directly, to float32 rounding."""
    ir = impulse_response(n=3000)
    reverb = streaming.StreamingReverb(ir, sample_rate, ir_rate, n_channels=2, block_sizes=block_sizes)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 20000)).astype(np.float32)
    x[1, 5000:] = 0.0
    pieces, start = [], 0
    for size in (1, 100, 385, 1000, 7, 4096, 3, 8000, 10000):
        pieces.append(reverb.process(x[:, start : start + size]))
        start += size
    out = np.concatenate(pieces, axis=-1)
    h = streaming.impulse_response_at_rate(ir, ir_rate, sample_rate).astype(np.float64)
    expected = x + np.stack([scipy.signal.fftconvolve(channel, h)[: x.shape[1]] for channel in x])
    assert np.max(np.abs(out - expected)) < 1e-5
    tail = reverb.tail_samples()
    assert tail[0] > 0 and tail[1] == 0  # channel 1 has rung out: its input stopped long ago


def test_impulse_response_at_rate_keeps_the_frequency_response():
    """The resampled response is the same filter: its DTFT equals the 16 kHz one's below 8 kHz,
    but for the pre-ringing a causal filter drops (measured -41 dB of the response's energy)."""
    ir = impulse_response().astype(np.float64)
    h = streaming.impulse_response_at_rate(ir, 16000, 48000).astype(np.float64)
    assert h.shape == (48000,)
    # The DTFTs at multiples of 0.5 Hz: both responses zero-padded to 2 s.
    expected = np.fft.rfft(ir, 2 * 16000)[: 2 * 7800]
    actual = np.fft.rfft(h, 2 * 48000)[: 2 * 7800]
    assert 10 * np.log10(np.sum(np.abs(actual - expected) ** 2) / np.sum(np.abs(expected) ** 2)) < -40
