"""`LiveServer`: the mixer, an output, the cache, the engine and the UDP transport, wired.

Used by `serve` (osc_server.cli), the tests and the benchmark. `open_output` opens the sound
card and, when there is none, falls back (a JACK dummy server it starts, or an internal clock
that optionally records to a WAV file), saying so in the log; it never lets a PortAudio error
escape as a traceback.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from osc_server.audio import SWITCH_INTERVAL_S, ClockOutput, Mixer, SoundDeviceOutput
from osc_server.cache import CacheDirError, NoteCache
from osc_server.engine import Engine, Generator
from osc_server.transport import OscTransport
from synth.presets import PresetStore

log = logging.getLogger("osc_server")


class SetupError(Exception):
    """The server cannot start as asked (message is for the performer)."""


M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024
ARENA_MAX = 2


def fixed_mmap_threshold() -> bool:
    """Have glibc serve every allocation over 128 KB (a note is 768 KB at 48 kHz) with its own
    mmap, returned to the system when freed. By default glibc raises that threshold each time
    such a block is freed, after which notes come from the heap arenas and fragment them: a
    soak of chords, pre-renders and HTTP requests grew the server from 247 MB to 3.2 GB this way,
    never returned; with the threshold fixed it went from 240 to 293 MB. Also at most ARENA_MAX
    malloc arenas: each HTTP worker thread would otherwise get one of its own (up to 8 per core)
    and keep its freed memory. False where not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(libc.mallopt(M_ARENA_MAX, ARENA_MAX))
    except (OSError, AttributeError):
        return False


def reinit_portaudio() -> Any:
    """(Re)initialise PortAudio so it sees JACK servers started since it was loaded."""
    import sounddevice as sd

    while sd._initialized:
        sd._terminate()
    sd._initialize()
    return sd


def terminate_portaudio() -> None:
    import sys

    sd = sys.modules.get("sounddevice")
    if sd is not None:
        while sd._initialized:
            sd._terminate()


def realtime_threads(pid: int, priority: int) -> bool:
    """SCHED_FIFO for every thread of a process, where allowed. `jackd --no-realtime` starts
    anywhere; raising its threads afterwards keeps its cycle on time on a loaded machine."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError, AttributeError):
        return False
    return True


def start_jack_dummy(sample_rate: int, blocksize: int, name: str | None = None,
                     timeout_s: float = 10.0) -> tuple[subprocess.Popen, str]:
    """Start `jackd --no-realtime -d dummy` under a unique name; return once clients can connect."""
    name = name or f"sound-generator-{os.getpid()}"
    proc = subprocess.Popen(
        ["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", str(sample_rate), "-p", str(blocksize)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"jackd exited: {proc.stderr.read().decode(errors='replace')[-500:]}")
        if not shutil.which("jack_lsp"):
            time.sleep(1.0)  # no probe tool: give it a second
            return proc, name
        probe = subprocess.run(["jack_lsp"], env=env, capture_output=True, timeout=5)
        if probe.returncode == 0 and b"system:" in probe.stdout:
            realtime_threads(proc.pid, 75)
            return proc, name
        time.sleep(0.1)
    proc.kill()
    raise SetupError("jackd did not become ready")


def _device_list() -> str:
    import sounddevice as sd

    return str(sd.query_devices())


def open_output(mixer: Mixer, device=None, blocksize: int = 256, record: str | None = None,
                jack_fallback: bool = True, realtime: bool = True) -> tuple[Any, str, subprocess.Popen | None]:
    """(output, what it is, jackd process we started or None)."""
    if record:
        out = ClockOutput(mixer, blocksize, record=record, realtime=realtime)
        return out, f"no sound card used: writing the stream to {record}", None
    try:
        import sounddevice as sd
    except OSError as e:  # the PortAudio library itself is missing
        sd = None
        reason = f"PortAudio not available ({e})"
    if sd is not None:
        try:
            return SoundDeviceOutput(mixer, device, blocksize, realtime=realtime), "", None
        except (sd.PortAudioError, ValueError) as e:
            if "sample rate" in str(e).lower():
                rate = sd.query_devices(device, "output")["default_samplerate"]
                raise SetupError(f"the output device does not take {mixer.sample_rate} Hz ({e}); "
                                 f"its rate is {rate:g} Hz: pass --sample-rate {rate:g}") from None
            if device is not None:
                raise SetupError(f"cannot open output device {device!r}: {e}\navailable devices:\n{_device_list()}")
            reason = f"no sound card found (PortAudio: {e})"
    if sd is not None and jack_fallback and shutil.which("jackd"):
        os.environ["JACK_NO_START_SERVER"] = "1"
        proc, name = start_jack_dummy(mixer.sample_rate, blocksize)
        os.environ["JACK_DEFAULT_SERVER"] = name
        sd = reinit_portaudio()
        try:
            out = SoundDeviceOutput(mixer, None, blocksize, realtime=realtime)
        except (sd.PortAudioError, ValueError) as e:
            terminate_portaudio()
            proc.kill()
            proc.wait()
            reason += f"; the JACK dummy server failed too ({e})"
        else:
            return out, (f"{reason}; started a JACK dummy server '{name}' (silent; connect a JACK client "
                         f"with JACK_DEFAULT_SERVER={name} to hear or record it)"), proc
    out = ClockOutput(mixer, blocksize, realtime=realtime)
    return out, f"{reason}; running on an internal clock, nothing is heard (use --record PATH to keep it)", None


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    device: Any = None
    sample_rate: int = 48000
    blocksize: int = 256
    cache_mb: float = 512
    cache_dir: str | None = None
    cache_dir_mb: float = 2048  # the folder's own budget (a 4 s note at 48 kHz is 750 KB)
    voices: int = 32
    workers: int = 2
    record: str | None = None
    jack_fallback: bool = True
    realtime: bool = True  # SCHED_FIFO for the audio callback and the OSC thread, when allowed
    allow: tuple = ()  # ip networks whose senders are served (OSC, HTTP); empty: everyone
    presets_dir: str | None = None  # the user's presets (/preset/...); None: platformdirs' user data dir
    # "live": notes sound while held (osc_server.voices, a voice process with the generator);
    # "oneshot": 4 s notes from the cache. `serve` plays live (its --voice-mode); the library's
    # default stays the one-shots, which any generator can play (the tests' tone generators too).
    voice_mode: str = "oneshot"
    voice_factory: str | None = None  # the live voices' generator ('module:function'); None: the default
    live_voices: int = 12  # live voices at most (the voice process's cost grows with each; BENCHMARKS.md)


class LiveServer:
    """The live server: cache, output, engine and OSC transport, opened in that order.

    `generator` is what the engine renders with: the server's `RenderPool` (worker processes),
    or an in-process generator in tests. Whatever fails while opening closes what was already
    open (the fallback jackd included) before the error reaches the caller; a bad `--cache-dir`
    or a taken port is a `SetupError` naming the option."""

    def __init__(self, generator: Generator, config: ServerConfig):
        self.config = config
        self._jackd = None
        self.output = None
        self.engine = None
        self.voices = None
        try:
            self.cache = NoteCache(int(config.cache_mb * 2**20), config.cache_dir, int(config.cache_dir_mb * 2**20))
        except (CacheDirError, OSError) as e:
            raise SetupError(f"--cache-dir: {e}") from None
        self.mixer = Mixer(config.sample_rate, max_voices=config.voices)
        try:
            if config.voice_mode == "live":
                from osc_server.render_pool import DEFAULT_FACTORY
                from osc_server.voices import LiveVoices, VoiceProcessError

                try:
                    self.voices = LiveVoices(config.voice_factory or DEFAULT_FACTORY, config.sample_rate,
                                             config.live_voices, config.blocksize, realtime=config.realtime)
                except (VoiceProcessError, ValueError) as e:
                    raise SetupError(f"--voice-mode live (serve's default): {e}; a generator that live voices "
                                     f"cannot play plays one-shots with --voice-mode oneshot") from None
                self.voices.attach(self.mixer)
            elif config.voice_mode != "oneshot":
                raise SetupError(f"--voice-mode: expected live or oneshot, got {config.voice_mode!r}")
            self.output, self.fallback, self._jackd = open_output(
                self.mixer, config.device, config.blocksize, config.record, config.jack_fallback, config.realtime)
            self.engine = Engine(generator, self.mixer, self.output, self.cache, workers=config.workers,
                                 realtime=config.realtime, voices=self.voices)
            self.engine.presets = PresetStore(config.presets_dir)
            try:
                self.transport = OscTransport(self.engine, config.host, config.port, realtime=config.realtime,
                                              allow=config.allow)
            except OSError as e:
                raise SetupError(f"--port: cannot listen on udp://{config.host}:{config.port}: {e}") from None
        except BaseException:
            if self.engine is not None:
                self.engine.close()
            self._release_output()
            if self.voices is not None:
                self.voices.close()
            raise

    @property
    def address(self) -> tuple[str, int]:
        return self.transport.address

    def start(self) -> "LiveServer":
        fixed_mmap_threshold()
        # The audio callback needs the GIL every block; a busy receiving thread would otherwise
        # hold it for up to 5 ms (CPython's default switch interval), close to a 256-frame block.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        # Everything loaded so far (the generator, TensorFlow) is long-lived: keep it out of the
        # garbage collector's scans, whose full passes hold the GIL and would stall the callback.
        gc.collect()
        gc.freeze()
        self.output.start()
        self.transport.start()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and (
                self.transport.realtime_ok is None or getattr(self.output, "realtime_ok", False) is None):
            time.sleep(0.01)
        if self.config.realtime:
            rt = {"audio callback": getattr(self.output, "realtime_ok", False), "OSC thread": self.transport.realtime_ok}
            if all(rt.values()):
                log.info("real-time priority (SCHED_FIFO) for the audio callback and the OSC thread")
            else:
                log.info("no real-time priority for %s (needs rtprio, e.g. the audio group); running at normal "
                         "priority", ", ".join(k for k, v in rt.items() if not v))
        if self.fallback:
            log.warning("%s", self.fallback)
        log.info("audio: %s, %d Hz, %d-frame blocks (latency %.1f ms)", self.output.device_name,
                 self.mixer.sample_rate, self.config.blocksize, 1e3 * self.output.latency_s)
        log.info("listening for OSC on udp://%s:%d", *self.address)
        return self

    def close(self) -> None:
        self.transport.close()
        self.engine.close()
        self.output.close()
        self._release_output()
        if self.voices is not None:
            self.voices.close()

    def _release_output(self) -> None:
        """Stop the fallback jackd we started, if any (idempotent)."""
        jackd, self._jackd = self._jackd, None
        if jackd is not None:
            terminate_portaudio()
            jackd.terminate()
            try:
                jackd.wait(timeout=5)
            except subprocess.TimeoutExpired:
                jackd.kill()
                jackd.wait()
