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

Streaming (`synth.streaming`, live voices): the same kind of note at the decoder's 125 frames/s,
rendered one frame (384 samples at 48 kHz) per call, as a live voice plays it:

* stream_chunk_ms_48k: one voice (`StreamingSynth`: 64 harmonics, 65 noise bands, 1 s reverb),
  wall-clock ms per one-frame chunk (median);
* voices32_cpu_pct: 32 voices in one `StreamingSynthBank` (64 harmonics + 65 noise bands each)
  and the reverb on their mix (one `StreamingReverb`: every voice of a model shares the learned
  impulse response, so this is the same sound as a reverb per voice), process CPU time per second
  of audio, in % of one core (the target is <= 40 %);
* voices32_voice_reverb_cpu_pct: the same with a reverb per voice (32 channels of
  `StreamingReverb`, one partition level) and voices32_voice_reverb2_cpu_pct with two partition
  levels (blocks of 1 and 8 frames: less work, in bursts);
* voices32_dry_cpu_pct: the bank alone (no reverb).

CPU percentages are medians over each second of audio rendered (4 s; 1 s with --quick).
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


def _stream_figures(quick: bool) -> dict[str, float]:
    from synth.models import DECODER_FRAME_RATE
    from synth.streaming import StreamingReverb, StreamingSynth, StreamingSynthBank

    sample_rate, n_voices = 48000, 32
    n_frames = (1 if quick else SECONDS) * DECODER_FRAME_RATE
    note = _note_controls(DECODER_FRAME_RATE, 64, 65)
    rng = np.random.default_rng(1)
    ir = (0.05 * rng.normal(size=16000) * np.exp(-np.arange(16000) / 3000.0)).astype(np.float32)
    keys = ("f0_hz", "amplitude", "harmonic_distribution", "noise_magnitudes")
    # 32 voices a quarter-tone apart, one frame per call.
    voices = [{**note, "f0_hz": note["f0_hz"] * np.float32(2 ** (i / 24))} for i in range(n_voices)]
    stacked = [np.stack([voice[key][:n_frames] for voice in voices]) for key in keys]
    frames = [[control[:, j : j + 1] for control in stacked] for j in range(n_frames)]

    def cpu_pct(render_frame) -> float:
        """Median over each second of audio of the process CPU time it took, in % of that second."""
        for j in range(10):  # warm-up: caches, buffers
            render_frame(frames[j])
        seconds = []
        for first in range(0, n_frames, DECODER_FRAME_RATE):
            start = time.process_time()
            for chunk in frames[first : first + DECODER_FRAME_RATE]:
                render_frame(chunk)
            seconds.append(100.0 * (time.process_time() - start))
        return float(np.median(seconds))

    figures: dict[str, float] = {}
    bank = StreamingSynthBank(n_voices, sample_rate, seeds=list(range(n_voices)))
    figures["voices32_dry_cpu_pct"] = cpu_pct(lambda chunk: bank.render_chunk(*chunk))
    mix_reverb = StreamingReverb(ir, sample_rate)
    figures["voices32_cpu_pct"] = cpu_pct(
        lambda chunk: mix_reverb.process(bank.render_chunk(*chunk).sum(axis=0)))
    for suffix, block_sizes in (("", None), ("2", (384, 8 * 384))):
        reverbs = StreamingReverb(ir, sample_rate, n_channels=n_voices, block_sizes=block_sizes)
        figures[f"voices32_voice_reverb{suffix}_cpu_pct"] = cpu_pct(
            lambda chunk, reverbs=reverbs: reverbs.process(bank.render_chunk(*chunk)).sum(axis=0))

    synth = StreamingSynth(sample_rate, ir, seed=0)
    one = [[control[0] for control in chunk] for chunk in frames]
    for chunk in one[:10]:
        synth.render_chunk(*chunk)
    times = []
    for chunk in one:
        start = time.perf_counter()
        synth.render_chunk(*chunk)
        times.append(time.perf_counter() - start)
    figures["stream_chunk_ms_48k"] = float(np.median(times) * 1e3)
    return figures


def run(quick: bool) -> dict[str, float]:
    from synth import core
    from synth.fast_render import single_threaded_blas
    from synth.processors import DDSPSynth

    single_threaded_blas()  # as in every process of the server that renders
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
    figures.update(_stream_figures(quick))
    return figures
