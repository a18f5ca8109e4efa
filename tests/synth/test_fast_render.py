"""synth.fast_render: the numpy path used live, against the TensorFlow path and physics."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal

from synth import core, fast_render
from synth.processors import DDSPSynth

RATES = (16000, 44100, 48000)


def measure_pitch_hz(audio: np.ndarray, sample_rate: int, near_hz: float) -> float:
    """Strongest peak within 10% of `near_hz`: Hann window, 8x zero-padding, parabolic
    interpolation of the log magnitude."""
    n_fft = 8 * len(audio)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    band = np.flatnonzero((freqs > 0.9 * near_hz) & (freqs < 1.1 * near_hz))
    k = band[np.argmax(spectrum[band])]
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sample_rate / n_fft


def relative_error_db(actual: np.ndarray, expected: np.ndarray) -> float:
    return 10 * np.log10(np.mean((actual - expected) ** 2) / np.mean(expected**2))


def smooth_note_controls(n_frames: int, seed: int = 0, f0_hz: float = 220.0, top_harmonic: int = 64,
                         noise: bool = True) -> dict:
    """Physical controls of a plausible note: vibrato, smooth random envelopes and spectra."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / core.FRAME_RATE
    f0 = f0_hz * 2 ** (0.3 * np.sin(2 * np.pi * 5.0 * t) / 12)

    def smooth(x):
        return scipy.ndimage.gaussian_filter1d(x, 4.0, axis=0)

    amplitude = 0.5 * np.exp(smooth(rng.normal(size=n_frames)))
    k = np.arange(1, core.N_HARMONICS + 1)
    dist = np.exp(smooth(rng.normal(size=(n_frames, core.N_HARMONICS)))) / k
    dist[:, top_harmonic:] = 0.0
    dist *= fast_render.harmonic_mask(f0, core.N_HARMONICS, core.MAX_FREQUENCY_HZ)
    dist /= dist.sum(axis=1, keepdims=True)
    magnitudes = 0.02 * np.exp(smooth(rng.normal(size=(n_frames, core.N_NOISE_BANDS)))) if noise \
        else np.zeros((n_frames, core.N_NOISE_BANDS))
    as32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    return {"f0_hz": as32(f0), "amplitude": as32(amplitude), "harmonic_distribution": as32(dist),
            "noise_magnitudes": as32(magnitudes)}


def batched(controls: dict) -> dict:
    """One note's numpy controls -> the [1, n_frames, ch] tensors the TF path takes."""
    return {key: (value[None, :, None] if value.ndim == 1 else value[None])
            for key, value in controls.items()}


def synth_with_reverb(seed: int = 3, gain: float = 0.05) -> DDSPSynth:
    synth = DDSPSynth()
    rng = np.random.default_rng(seed)
    n = core.REVERB_LENGTH
    synth.reverb.ir.assign((gain * rng.normal(size=n) * np.exp(-np.arange(n) / 1600.0)).astype(np.float32))
    return synth


# ---------------------------------------------------------------------------------------------
# Same audio as the TensorFlow path.


def test_harmonic_np_matches_closed_form_at_odd_sizes():
    """Steady tone, odd frame and sample counts: exact sines up to the wavetable's images."""
    for n_frames, n_samples, sample_rate in [(37, 2371, 16000), (100, 17640, 44100), (3, 577, 48000)]:
        f0 = np.full(n_frames, 440.0, np.float32)
        dist = np.zeros((n_frames, 8), np.float32)
        dist[:, [0, 2, 4]] = [0.5, 0.3, 0.2]
        audio = fast_render.harmonic_synthesis_np(f0, np.full(n_frames, 0.8, np.float32), dist,
                                                  n_samples, sample_rate)
        t = np.arange(n_samples) / sample_rate
        expected = 0.8 * (0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1320 * t)
                          + 0.2 * np.sin(2 * np.pi * 2200 * t))
        assert audio.shape == (n_samples,) and audio.dtype == np.float32
        assert relative_error_db(audio, expected) < -60


@pytest.mark.parametrize("n_frames", (250, 333))
def test_harmonic_np_matches_tf_with_all_64_harmonics(n_frames):
    controls = smooth_note_controls(n_frames, f0_hz=110.0)
    n_samples = core.n_samples_for(n_frames, 16000)
    expected = core.harmonic_synthesis(controls["f0_hz"][None, :, None], controls["amplitude"][None, :, None],
                                       controls["harmonic_distribution"][None], n_samples, 16000).numpy()[0]
    actual = fast_render.harmonic_synthesis_np(controls["f0_hz"], controls["amplitude"],
                                               controls["harmonic_distribution"], n_samples, 16000)
    assert relative_error_db(actual, expected) < -60


@pytest.mark.parametrize("sample_rate,n_frames", [(16000, 250), (44100, 333), (48000, 250), (48000, 77)])
def test_render_numpy_matches_tf_path(sample_rate, n_frames):
    """Harmonic + reverb (no noise: its draw differs), odd frame counts, every card rate. At the
    card's rate the numpy path synthesises at 16 kHz and resamples, the TF path synthesises
    directly: two independent routes to the same band-limited sound."""
    synth = synth_with_reverb()
    controls = smooth_note_controls(n_frames, top_harmonic=24, noise=False)
    expected = synth.get_signal(batched(controls), sample_rate=sample_rate).numpy()[0]
    actual = synth.render_numpy(controls, sample_rate)
    assert actual.shape == expected.shape == (core.n_samples_for(n_frames, sample_rate),)
    assert actual.dtype == np.float32
    # Edges trimmed: the note's abrupt start and end ring differently in the two routes.
    edge = sample_rate // 100
    assert relative_error_db(actual[edge:-edge], expected[edge:-edge]) < -48


@pytest.mark.parametrize("sample_rate", (16000, 48000))
def test_noise_spectrum_matches_tf_path(sample_rate):
    """Same band magnitudes, independent draws: band powers agree within 1 dB below 7.5 kHz."""
    synth = DDSPSynth()
    controls = smooth_note_controls(500, seed=4)
    controls["amplitude"][:] = 0.0
    expected = synth.get_signal(batched(controls), sample_rate=sample_rate, seed=1).numpy()[0]
    actual = synth.render_numpy(controls, sample_rate, rng=np.random.default_rng(2))
    f, p_tf = scipy.signal.welch(expected, sample_rate, nperseg=1024)
    _, p_np = scipy.signal.welch(actual, sample_rate, nperseg=1024)
    for lo in range(250, 7500, 500):
        band = (f >= lo) & (f < lo + 500)
        assert abs(10 * np.log10(p_np[band].sum() / p_tf[band].sum())) < 1.0
    assert p_np[f > 8300].sum() < 1e-4 * p_np.sum()


def test_render_numpy_follows_a_changed_impulse_response():
    synth = synth_with_reverb(seed=1)
    controls = smooth_note_controls(100, noise=False)
    before = synth.render_numpy(controls, 48000)
    synth.reverb.ir.assign(np.zeros(core.REVERB_LENGTH, np.float32))
    after = synth.render_numpy(controls, 48000)
    dry = synth.get_signal(batched(controls), sample_rate=48000).numpy()[0]
    assert relative_error_db(after, before) > -20
    assert relative_error_db(after[480:-480], dry[480:-480]) < -40


# ---------------------------------------------------------------------------------------------
# Physical properties of what the live path plays.


@pytest.mark.parametrize("sample_rate", RATES)
@pytest.mark.parametrize("f0_hz", (55.0, 261.63, 1760.0))
def test_rendered_pitch_within_one_cent(sample_rate, f0_hz):
    controls = smooth_note_controls(250, f0_hz=f0_hz, noise=False)
    controls["f0_hz"][:] = f0_hz
    audio = fast_render.FastRenderer().render(controls["f0_hz"], controls["amplitude"],
                                              controls["harmonic_distribution"],
                                              controls["noise_magnitudes"], sample_rate)
    measured = measure_pitch_hz(audio, sample_rate, f0_hz)
    assert abs(1200 * np.log2(measured / f0_hz)) < 1.0
    second = measure_pitch_hz(audio, sample_rate, 2 * f0_hz)
    assert abs(1200 * np.log2(second / (2 * f0_hz))) < 1.0


@pytest.mark.parametrize("sample_rate", (44100, 48000))
def test_nothing_above_the_band_limit(sample_rate):
    """Glide with 64 flat harmonics and flat noise: nothing above 8 kHz at the card's rate."""
    n_frames = 250
    f0 = np.geomspace(200.0, 2000.0, n_frames).astype(np.float32)
    dist = np.full((n_frames, 64), 1.0, np.float32) * fast_render.harmonic_mask(f0, 64, 8000.0)
    dist /= dist.sum(axis=1, keepdims=True)
    audio = fast_render.FastRenderer().render(f0, np.full(n_frames, 0.5, np.float32), dist,
                                              np.full((n_frames, 65), 0.05, np.float32), sample_rate)
    f, psd = scipy.signal.welch(audio, sample_rate, nperseg=2048)
    assert psd[f > 8500].sum() < 1e-6 * psd.sum()
    assert psd[(f > 6000) & (f < 8000)].sum() > 1e-3 * psd.sum()


def test_phase_continuity_with_jumping_f0():
    rng = np.random.default_rng(1)
    n_frames, sample_rate = 333, 48000
    f0 = rng.uniform(200.0, 400.0, size=n_frames).astype(np.float32)
    dist = np.zeros((n_frames, 4), np.float32)
    dist[:, 0] = 1.0
    audio = fast_render.harmonic_synthesis_np(f0, np.ones(n_frames, np.float32), dist, 63913, sample_rate)
    assert np.max(np.abs(np.diff(audio))) < 1.05 * 2 * np.pi * 400.0 / sample_rate


def test_silence_in_silence_out_and_finite_for_extremes():
    renderer = fast_render.FastRenderer(np.full(1000, 0.01, np.float32))
    n_frames = 60
    zeros = np.zeros(n_frames, np.float32)
    silent = renderer.render(np.full(n_frames, 440.0, np.float32), zeros, np.ones((n_frames, 64), np.float32),
                             np.zeros((n_frames, 65), np.float32), 48000)
    assert silent.shape == (60 * 192,) and np.all(silent == 0.0)
    f0 = np.where(np.arange(n_frames) % 2, 0.0, 30000.0).astype(np.float32)
    loud = renderer.render(f0, np.full(n_frames, 1e6, np.float32), np.ones((n_frames, 64), np.float32),
                           np.full((n_frames, 65), 1e3, np.float32), 44100)
    assert np.all(np.isfinite(loud))


def test_repeated_renders_of_different_shapes_do_not_leak_state():
    """Work buffers are shared between notes: a note renders the same before and after others."""
    renderer = fast_render.FastRenderer(np.full(800, 0.001, np.float32))
    controls = smooth_note_controls(120, noise=False)
    args = (controls["f0_hz"], controls["amplitude"], controls["harmonic_distribution"],
            controls["noise_magnitudes"])
    first = renderer.render(*args, 48000)
    for other_frames, f0_hz in ((333, 55.0), (120, 3000.0), (40, 110.0)):
        other = smooth_note_controls(other_frames, f0_hz=f0_hz)
        renderer.render(other["f0_hz"], other["amplitude"], other["harmonic_distribution"],
                        other["noise_magnitudes"], 48000)
    np.testing.assert_array_equal(renderer.render(*args, 48000), first)


@pytest.mark.parametrize("sample_rate", (44100, 48000))
def test_rendered_loudness_matches_the_training_rate_render(sample_rate):
    """A note played at the card's rate is as loud, frame by frame, as at 16 kHz."""
    synth = synth_with_reverb()
    controls = smooth_note_controls(500, seed=7)
    at_16k = core.compute_loudness_db(synth.render_numpy(controls, 16000, np.random.default_rng(0)), 16000)
    at_card = core.compute_loudness_db(synth.render_numpy(controls, sample_rate, np.random.default_rng(0)),
                                       sample_rate)
    assert at_16k.shape == at_card.shape == (500,)
    np.testing.assert_allclose(at_card[5:-5], at_16k[5:-5], atol=0.5)


def test_render_numpy_from_several_threads_at_once():
    """The live server may render notes on several threads: each gets its own work buffers."""
    from concurrent.futures import ThreadPoolExecutor

    synth = synth_with_reverb()
    notes = [smooth_note_controls(n_frames, seed=i, f0_hz=f0_hz, noise=False)
             for i, (n_frames, f0_hz) in enumerate([(250, 110.0), (333, 440.0), (250, 1000.0), (77, 55.0)])]
    expected = [synth.render_numpy(note, 48000) for note in notes]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            results = list(pool.map(lambda note: synth.render_numpy(note, 48000), notes))
            for got, want in zip(results, expected):
                np.testing.assert_array_equal(got, want)



def test_single_threaded_blas_resizes_a_pool_numpy_has_already_started():
    import json
    import subprocess
    import sys

    code = ("import json, numpy\n"
            "from threadpoolctl import threadpool_info\n"
            "from synth.fast_render import single_threaded_blas\n"
            "blas = lambda: max(p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas')\n"
            "before = blas()\n"
            "single_threaded_blas()\n"
            "print(json.dumps([before, blas()]))\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [2, 1]


@pytest.mark.parametrize("sample_rate", (32000, 48000, 96000))
def test_the_polyphase_upsampling_is_the_one_long_inverse_transform(sample_rate):
    """At rates an integer multiple of the base rate, the reverb's spectrum goes back to audio
    as `ratio` short inverse transforms (`FastRenderer._upsample_polyphase`): the same samples
    as the one long transform it replaces, including the base Nyquist bin."""
    import scipy.fft

    renderer = fast_render.FastRenderer(np.random.default_rng(3).standard_normal(4000).astype(np.float32) * 0.01)
    n_from = 20000
    ratio = sample_rate // renderer.base_sample_rate
    rng = np.random.default_rng(4)
    spectrum = (rng.standard_normal(n_from // 2 + 1) + 1j * rng.standard_normal(n_from // 2 + 1)).astype(np.complex64)
    spectrum[0] = spectrum[0].real
    spectrum[-1] = 3.0 + 2.0j  # a top bin with an imaginary part: folded with its mirror
    full = np.zeros(n_from * ratio // 2 + 1, np.complex64)
    full[: spectrum.size] = spectrum
    for n_out in (n_from * ratio, n_from * ratio - 7):
        expected = scipy.fft.irfft(full, n_from * ratio)[:n_out]
        actual = renderer._upsample_polyphase(spectrum, n_from, ratio, n_out)
        assert actual.shape == (n_out,)
        np.testing.assert_allclose(actual, expected, atol=2e-6 * np.max(np.abs(expected)), rtol=0)
