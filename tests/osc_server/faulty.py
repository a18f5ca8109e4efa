"""Generators that fail in the ways a render process can, for the render pool's tests (imported
by the spawned worker processes, which get the test's sys.path).

    pitch 13   the process dies (os._exit) on every render of it
    pitch 14   the process dies on the first render of it in this test (a marker file, named by
               $FAULTY_MARKER, remembers it across the restart)
    pitch 15   the render hangs for 30 s
    pitch 16   the generator raises ValueError
    pitch 17   a 4 s "note" whose every sample is the number of BLAS threads in the worker
    any other  ToneGenerator's tone
"""

from __future__ import annotations

import os
import time

import numpy as np
from threadpoolctl import threadpool_info

from tone import ToneGenerator


class FaultyGenerator(ToneGenerator):
    model_version = "test-faulty-1"

    def render(self, params, sample_rate):
        if params.pitch == 13:
            os._exit(3)
        if params.pitch == 14:
            marker = os.environ["FAULTY_MARKER"]
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(4)
        if params.pitch == 15:
            time.sleep(30)
        if params.pitch == 16:
            raise ValueError("pitch 16 is out of this model's range")
        if params.pitch == 17:
            blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
            return np.full(4 * sample_rate, float(max(blas)), np.float32)
        return super().render(params, sample_rate)


def make() -> FaultyGenerator:
    return FaultyGenerator(delay_s=0.0)


def fail_to_load():
    raise OSError("checkpoints/decoder.weights.h5: no such file")
