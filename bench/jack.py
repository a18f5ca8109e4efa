"""A private JACK server (dummy driver) and a capture client, to measure through the real audio
path (the benchmark and the tests).

    with JackDummy() as jack_name:          # jackd -n <unique> --no-realtime -d dummy -r 48000 -p 256
        ...                                  # JACK_DEFAULT_SERVER is set; PortAudio re-initialised
        device = portaudio_jack_device()     # PortAudio's output device on that server
        cap = Capture(jack_name)             # a JACK client recording what it is connected to
        cap.connect("PortAudio")             # every output port of that client -> our input
        f = cap.now(); ...; audio = cap.read(f, f + 4800)

Frames are JACK frame times, so "message sent at frame f" and "sound at frame g" share a clock.
On a loaded machine JACK itself can run late (an xrun) even with nothing but this client
running; `Capture.glitches` counts those, so a timing measurement can tell a clean run from one
the machine disturbed and measure again.
The benchmark's live figures (bench/server.py) and the tests' fixtures (`jack_dummy` and `live` in
tests/osc_server/conftest.py, `jack_server` in tests/clients/conftest.py) use these.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np

from osc_server.audio import RT_PRIORITY_AUDIO, try_realtime
from osc_server.server import realtime_threads, terminate_portaudio

JACKD_RT_PRIORITY = 75  # jackd's threads, above the server's audio thread (RT_PRIORITY_AUDIO)


def _reinit_portaudio() -> None:
    """Re-initialise PortAudio if it is loaded (it sees only the JACK servers running when it
    initialised); a PortAudio loaded later sees the new server anyway."""
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        while sd._initialized:
            sd._terminate()
        sd._initialize()


def portaudio_jack_device(timeout: float = 10.0) -> int:
    """Index of PortAudio's JACK output device, re-initialising PortAudio until it sees the
    server (on a loaded machine its first connection attempt can fail)."""
    import sounddevice as sd

    deadline = time.monotonic() + timeout
    while True:
        devices = [i for i, d in enumerate(sd.query_devices())
                   if "JACK" in sd.query_hostapis(d["hostapi"])["name"] and d["max_output_channels"] > 0]
        if devices:
            return devices[0]
        assert time.monotonic() < deadline, f"PortAudio does not see the JACK server: {sd.query_hostapis()}"
        time.sleep(0.2)
        _reinit_portaudio()


class JackDummy:
    """Start `jackd` with the dummy driver under a unique name; stop it on exit.

    On enter (or `start()`), JACK_DEFAULT_SERVER / JACK_NO_START_SERVER point this process's JACK
    clients at it and an already loaded PortAudio is re-initialised so it sees it. On exit (or
    `stop()`) PortAudio is terminated before jackd stops (PortAudio's JACK host API aborts the
    process otherwise).
    """

    def __init__(self, sample_rate: int = 48000, blocksize: int = 256, prefix: str = "sg-test"):
        assert shutil.which("jackd"), "jackd is not installed (Debian: jackd2)"
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.sample_rate, self.blocksize = sample_rate, blocksize
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> str:
        """Start jackd; returns its server name once clients can connect."""
        self.proc = subprocess.Popen(
            ["jackd", "-n", self.name, "--no-realtime", "-d", "dummy", "-r", str(self.sample_rate),
             "-p", str(self.blocksize)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"},
        )
        waited = subprocess.run(["jack_wait", "-s", self.name, "-w", "-t", "10"], capture_output=True, text=True)
        assert waited.returncode == 0 and self.proc.poll() is None, f"jackd did not start: {waited.stdout}"
        realtime_threads(self.proc.pid, JACKD_RT_PRIORITY)
        for k, v in (("JACK_DEFAULT_SERVER", self.name), ("JACK_NO_START_SERVER", "1")):
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        _reinit_portaudio()
        return self.name

    def stop(self) -> None:
        terminate_portaudio()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Capture:
    """A JACK client with one input port that keeps the last `seconds` of audio by frame time."""

    def __init__(self, server_name: str, seconds: float = 30.0, name: str = "sg-capture"):
        import jack

        self.client = jack.Client(name, no_start_server=True, servername=server_name)
        self.sample_rate = self.client.samplerate
        self.blocksize = self.client.blocksize
        self.port = self.client.inports.register("in")
        self.size = int(seconds * self.sample_rate)
        self.buf = np.zeros(self.size, dtype=np.float32)
        self.end_frame = -1  # frame after the last captured one
        self.realtime: bool | None = None
        self.gaps = 0  # cycles this client missed (their frames read as silence)
        self.xruns = 0  # JACK's xruns (any client, or jackd itself, late)
        # When (time.perf_counter) each recent cycle ran, by its first frame: JACK's frame clock is
        # an estimate that drifts from the cycles actually run on a loaded machine, so latencies
        # are measured in wall time, message sent -> the cycle that carried its sound.
        self.cycle_frame = np.full(4096, -1, dtype=np.int64)
        self.cycle_wall = np.zeros(4096, dtype=np.float64)
        self._cycles = 0
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()

    def _xrun(self, delayed_usecs: float) -> None:
        self.xruns += 1

    @property
    def glitches(self) -> int:
        """xruns + missed cycles so far: a measurement spanning a change is not a clean one."""
        return self.xruns + self.gaps

    def _process(self, frames: int) -> None:
        if self.realtime is None:
            # Real-time priority where allowed (root), just below the server's audio thread;
            # normal priority is fine on an idle machine.
            self.realtime = try_realtime(RT_PRIORITY_AUDIO - 5)
        f = self.client.last_frame_time
        k = self._cycles % self.cycle_frame.size
        self.cycle_wall[k] = time.perf_counter()
        self.cycle_frame[k] = f
        self._cycles += 1
        if self.end_frame >= 0 and f != self.end_frame:
            self.gaps += 1
            if 0 < f - self.end_frame < self.size:  # the missed frames read as silence, not old audio
                missed = np.arange(self.end_frame, f) % self.size
                self.buf[missed] = 0.0
        data = self.port.get_array()
        i = f % self.size
        k = min(frames, self.size - i)
        self.buf[i:i + k] = data[:k]
        self.buf[:frames - k] = data[k:]
        self.end_frame = f + frames

    def connect(self, client_prefix: str) -> list[str]:
        """Connect every audio output port whose name starts with `client_prefix` to our input."""
        ports = [p.name for p in self.client.get_ports(client_prefix, is_audio=True, is_output=True)]
        for p in ports:
            if not self.client.get_all_connections(p) or self.port.name not in [
                    q.name for q in self.client.get_all_connections(p)]:
                self.client.connect(p, self.port)
        return ports

    def wall_time_of(self, frame: int) -> float:
        """time.perf_counter() at which the cycle holding `frame` ran (it must be recent)."""
        found = self.wall_time_or_nan(frame)
        assert not math.isnan(found), f"frame {frame} is not in a recent cycle"
        return found

    def wall_time_or_nan(self, frame: int) -> float:
        """`wall_time_of`, or NaN when the capture missed the cycle holding `frame` (a loaded
        machine): a benchmark leaves that try out rather than stop."""
        self.wait_until(frame + 1)
        starts = self.cycle_frame
        holding = np.flatnonzero((starts >= 0) & (starts <= frame) & (frame < starts + self.blocksize))
        return float(self.cycle_wall[holding].max()) if holding.size else float("nan")

    def now(self) -> int:
        """JACK's estimate of the current frame time."""
        return self.client.frame_time

    def wait_until(self, frame: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.end_frame < frame:
            assert time.monotonic() < deadline, f"capture stalled at frame {self.end_frame} (waiting for {frame})"
            time.sleep(0.005)

    def read(self, f0: int, f1: int) -> np.ndarray:
        """Captured audio of frames [f0, f1) (waits for them)."""
        assert f1 - f0 <= self.size
        self.wait_until(f1)
        assert self.end_frame - f0 <= self.size, "asked for audio older than the capture buffer"
        idx = np.arange(f0, f1) % self.size
        return self.buf[idx].copy()

    def clear_ahead(self, f0: int, f1: int) -> None:
        """Zero the frames of [f0, f1) not captured yet, so that a cycle this client misses
        leaves silence there, not audio one ring earlier. Frames within two blocks of the
        capture's end are left alone: the running cycle may be writing them."""
        start = max(f0, self.end_frame + 2 * self.blocksize)
        if f1 > start:
            self.buf[np.arange(start, f1) % self.size] = 0.0

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()
