"""Generator speed: `render_ms_48k` and `prerender_s` (targets: <= 15 ms and <= 6 s, 2-core CPU).

* `render_ms_48k`  median time of one uncached 4 s note through all three stages at 48 kHz in a
  warm process (`Generator.render`; each repetition changes the latent so nothing can be reused).
* `prerender_s`    one timbre over the whole keyboard: pitches 21..108 x the five velocity layers
  (440 notes) at 48 kHz through `Generator.render_batch` (two threads).
* `prerender_warm_s` the same keyboard again in the same process (until the networks ran in
  numpy, `prerender_s` included compiling the TensorFlow graph's batch shape: about 3 s on the
  2-core machine; now the two differ by noise).
* `render_neural_ms_48k` / `render_dsp_ms_48k`: the two halves of one note (for diagnosis).
* `generator_load_s`: loading the checkpoints (configs, and the weight files read with h5py: no
  TensorFlow).
"""

from __future__ import annotations

import time

import numpy as np

PRERENDER_PITCHES = range(21, 109)


def run(quick: bool = False) -> dict[str, float]:
    from synth.generator import Generator
    from synth.params import VELOCITY_LAYERS, NoteParams

    t0 = time.perf_counter()
    gen = Generator()
    load_s = time.perf_counter() - t0

    base = NoteParams(pitch=60, velocity=100, source="acoustic", qualities=("bright",))
    n = 10 if quick else 50
    rng = np.random.default_rng(0)
    for _ in range(3):  # warm-up: caches of the renderer for this rate
        gen.render(base, 48000)
    times, neural, dsp = [], [], []
    for _ in range(n):
        params = base.replace(latent_sample=[float(v) for v in rng.uniform(-3, 3, 16)])
        t = time.perf_counter()
        gen.render(params, 48000)
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = gen.run_neural([params])
        t1 = time.perf_counter()
        gen.render_controls({k: v[0] for k, v in out["controls"].items()}, 48000, params)
        t2 = time.perf_counter()
        neural.append(t1 - t)
        dsp.append(t2 - t1)

    pitches = list(PRERENDER_PITCHES)[::8] if quick else list(PRERENDER_PITCHES)
    notes = [base.replace(pitch=p, velocity=v, latent_sample=[0.5] * 16) for p in pitches for v in VELOCITY_LAYERS]
    t = time.perf_counter()
    gen.render_batch(notes, 48000)
    prerender = time.perf_counter() - t
    t = time.perf_counter()
    gen.render_batch([p.replace(latent_sample=[-0.5] * 16) for p in notes], 48000)
    prerender_warm = time.perf_counter() - t
    if quick:  # extrapolated to the whole keyboard
        prerender *= len(PRERENDER_PITCHES) / len(pitches)
        prerender_warm *= len(PRERENDER_PITCHES) / len(pitches)

    return {
        "render_ms_48k": float(np.median(times) * 1000),
        "render_neural_ms_48k": float(np.median(neural) * 1000),
        "render_dsp_ms_48k": float(np.median(dsp) * 1000),
        "prerender_s": float(prerender),
        "prerender_warm_s": float(prerender_warm),
        "generator_load_s": float(load_s),
    }
