"""Speed of the DDSP signal core's live path: render one 4 s note from frame-rate controls.

The note: f0 110 Hz with vibrato, all 64 harmonics active (64 x 110 Hz < 8 kHz), filtered noise
in 65 bands and a 1 s learned reverb, rendered with `DDSPSynth.render_numpy` (what the live
server calls) in a warm process. Figures are medians over repeated renders:

* dsp_render_ms_48k: wall-clock ms at 48 kHz, 250 frames/s (the target is <= 10 ms);
* dsp_render_cpu_ms_48k: the same renders in CPU time of the rendering thread, which other jobs
  on a shared machine disturb far less than wall-clock time;
* dsp_render_ms_44k: wall-clock ms at 44.1 kHz;
* dsp_render_ms_48k_125fps: wall-clock ms at 48 kHz with controls at 125 frames/s;
* loudness_ms_16k: `compute_loudness_db` of a 4 s note at 16 kHz (data-set feature extraction).
"""

from __future__ import annotations

import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SECONDS = 4


def _note_controls(frame_rate: int, n_harmonics: int, n_bands: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n_frames = SECONDS * frame_rate
    t = np.arange(n_frames) / frame_rate
    f0 = 110.0 * 2 ** (0.2 * np.sin(2 * np.pi * 5.0 * t) / 12)
    envelope = np.minimum(1.0, t / 0.02) * np.exp(-t / 1.5)
    k = np.arange(1, n_harmonics + 1)
    dist = rng.uniform(0.5, 1.0, size=(n_frames, n_harmonics)) / k
    dist /= dist.sum(axis=1, keepdims=True)
    magnitudes = 0.01 * rng.uniform(0.5, 1.0, size=(n_frames, n_bands))
    return {"f0_hz": f0.astype(np.float32), "amplitude": (0.5 * envelope).astype(np.float32),
            "harmonic_distribution": dist.astype(np.float32),
            "noise_magnitudes": magnitudes.astype(np.float32)}


def _median_ms(fn, repeats: int, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return float(np.median(times) * 1e3)


def run(quick: bool) -> dict[str, float]:
    from synth import core
    from synth.processors import DDSPSynth

    repeats = 15 if quick else 101
    figures: dict[str, float] = {}
    for frame_rate, suffix in ((core.FRAME_RATE, ""), (125, "_125fps")):
        synth = DDSPSynth(frame_rate=frame_rate)
        rng = np.random.default_rng(1)
        ir = 0.05 * rng.normal(size=core.REVERB_LENGTH) * np.exp(-np.arange(core.REVERB_LENGTH) / 3000.0)
        synth.reverb.ir.assign(ir.astype(np.float32))
        controls = _note_controls(frame_rate, synth.n_harmonics, synth.n_noise_bands)
        rates = (48000, 44100) if not suffix else (48000,)
        for sample_rate in rates:
            def render():
                return synth.render_numpy(controls, sample_rate, rng=rng)

            audio = render()  # warm-up: builds cached geometry, spectra and buffers
            assert audio.shape == (SECONDS * sample_rate,)
            for _ in range(3):
                render()
            label = "48k" if sample_rate == 48000 else "44k"
            figures[f"dsp_render_ms_{label}{suffix}"] = _median_ms(render, repeats)
            if sample_rate == 48000 and not suffix:
                figures["dsp_render_cpu_ms_48k"] = _median_ms(render, repeats, time.thread_time)

    audio = (0.1 * np.random.default_rng(2).normal(size=SECONDS * 16000)).astype(np.float32)
    core.compute_loudness_db(audio, 16000)
    figures["loudness_ms_16k"] = _median_ms(lambda: core.compute_loudness_db(audio, 16000), repeats)
    return figures
