"""`sound-generator serve` as a performer starts it, in a subprocess: no sound card fallbacks,
recording, the HTTP option, a bad --device, and a clean stop without a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.jack import JackDummy
from tone import Client, midi_hz

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`python -m synth.cli serve ...` with the test tone generator and no sound card in sight."""

    def __init__(self, *args: str, jack_server: str | None = None, tone: bool = True):
        """tone False: the shipped weights and `serve`'s own defaults (live voices)."""
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).parent}",
               "JACK_DEFAULT_SERVER": jack_server or f"sg-none-{uuid.uuid4().hex[:8]}", "JACK_NO_START_SERVER": "1",
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        # The test tone plays one-shots (live voices need the shipped weights' networks).
        generator = ["--generator-factory", "tone:make", "--voice-mode", "oneshot"] if tone else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "synth.cli", "serve", "--port", str(self.port), *generator, *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log:
            assert self.proc.poll() is None, f"serve exited ({self.proc.returncode}):\n{self.log}"
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.log}"
            time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=20)
        self._reader.join(timeout=5)
        return rc


@pytest.mark.jack
def test_without_a_sound_card_serve_starts_a_jack_dummy_server_and_plays():
    s = Serve()
    s.wait_for("ready")
    assert "started a JACK dummy server" in s.log
    c = Client(("127.0.0.1", s.port))
    c.send_msg("/note", 69, 100)
    assert c.wait_for("/ready", timeout=10) == [69, 100]
    c.send_msg("/status")
    assert len(c.wait_for("/status")) == 9
    c.send_msg("/note", 500, 1)
    assert "pitch" in c.wait_for("/error")[1]
    c.close()
    jackd = [line for line in s.log.splitlines() if "JACK_DEFAULT_SERVER=" in line]
    assert jackd
    assert s.stop() == 0, s.log
    assert "Traceback" not in s.log and "PortAudioError" not in s.log
    name = jackd[0].split("JACK_DEFAULT_SERVER=")[1].split(" ")[0].rstrip(")")
    assert subprocess.run(["pgrep", "-f", f"jackd -n {name} "], capture_output=True).returncode == 1  # gone


def test_serve_plays_live_voices_by_default(tmp_path):
    """`sound-generator serve` as the README starts it (the shipped weights, no options but a
    recording): an instrument's notes, not 4 s one-shots. A key held 6 s sounds until its
    note-off, as loud at 5.5 s as at 2.5 s (a one-shot ends at 4 s), then releases into silence."""
    from synth.cli import build_parser

    assert build_parser(load="serve").parse_args(["serve"]).voice_mode == "live"
    path = tmp_path / "live.wav"
    s = Serve("--record", str(path), tone=False)
    s.wait_for("ready", timeout=120)
    c = Client(("127.0.0.1", s.port))
    c.send_msg("/source", "synthetic")
    c.send_msg("/note", 60, 100)
    time.sleep(6.0)
    c.send_msg("/note/off", 60)
    c.sync()
    time.sleep(2.5)
    c.close()
    assert s.stop() == 0, s.log
    assert "Traceback" not in s.log
    audio, sr = sf.read(path)
    mono = audio[:, 0]
    start = int(np.flatnonzero(np.abs(mono) > 1e-3)[0])

    def level_db(t: float) -> float:
        x = mono[start + int(t * sr) : start + int((t + 0.2) * sr)]
        return 10 * np.log10(np.mean(x**2) + 1e-30)

    print(f"\nheld note: {level_db(2.5):.1f} dB at 2.5 s, {level_db(5.5):.1f} dB at 5.5 s, "
          f"{level_db(7.5):.1f} dB at 7.5 s")
    assert level_db(2.5) > -50.0
    assert abs(level_db(5.5) - level_db(2.5)) < 6.0
    assert np.max(np.abs(mono[start + int(7.8 * sr) :])) < 1e-4  # released into silence


def test_a_generator_live_voices_cannot_play_is_refused_naming_the_way_out(tmp_path):
    """`serve --generator-factory` with a generator that has no networks for live voices (the
    test tone): a startup error that names --voice-mode and the one-shots, not a traceback."""
    s = Serve("--record", str(tmp_path / "x.wav"), "--generator-factory", "tone:make", tone=False)
    rc = s.proc.wait(timeout=120)
    s._reader.join(timeout=5)
    assert rc == 2, s.log
    assert "--voice-mode live" in s.log and "--voice-mode oneshot" in s.log, s.log
    assert "Traceback" not in s.log


def test_record_writes_the_stream_to_a_wav_file(tmp_path):
    path = tmp_path / "live.wav"
    s = Serve("--record", str(path))
    s.wait_for("ready")
    assert f"writing the stream to {path}" in s.log
    c = Client(("127.0.0.1", s.port))
    c.send_msg("/note", 69, 127)
    c.wait_for("/ready")
    time.sleep(0.6)
    c.send_msg("/note/off", 69)
    c.sync()
    time.sleep(0.2)
    c.close()
    assert s.stop() == 0, s.log
    audio, sr = sf.read(path)
    assert sr == 48000 and audio.shape[1] == 2
    mono = audio[:, 0]
    loud = np.flatnonzero(np.abs(mono) > 1e-3)
    assert loud.size > 0.3 * sr
    seg = mono[loud[0] + 480:loud[0] + 480 + sr // 4]
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    assert abs(np.argmax(spec) * sr / seg.size - midi_hz(69)) < 5
    assert np.max(np.abs(audio)) <= 1.0


def test_gain_db_sets_the_master_gain_at_start(tmp_path):
    levels = {}
    for gain in ("0", "-20"):
        path = tmp_path / f"gain{gain}.wav"
        s = Serve("--record", str(path), "--gain-db", gain)
        try:
            s.wait_for("ready")
            c = Client(("127.0.0.1", s.port))
            c.send_msg("/status")
            assert c.wait_for("/status")[7] == pytest.approx(float(gain))
            c.send_msg("/note", 69, 127)
            c.wait_for("/ready")
            time.sleep(0.5)
            c.close()
        finally:
            assert s.stop() == 0, s.log
        audio, _ = sf.read(path)
        levels[gain] = np.max(np.abs(audio))
    assert levels["-20"] == pytest.approx(levels["0"] / 10, rel=0.05)


def test_gain_db_out_of_range_is_refused_with_the_allowed_range():
    s = Serve("--gain-db", "40")
    assert s.proc.wait(timeout=30) == 2
    s._reader.join(timeout=5)
    assert "--gain-db: expected a number of dB in [-80, 24], got '40'" in s.log


def test_cache_dir_mb_must_be_positive():
    s = Serve("--cache-dir-mb", "0")
    assert s.proc.wait(timeout=30) == 2
    s._reader.join(timeout=5)
    assert "--cache-dir-mb: expected a positive number of MB, got '0'" in s.log


def test_no_jack_fallback_runs_on_an_internal_clock():
    s = Serve("--no-jack-fallback")
    s.wait_for("ready")
    assert "internal clock" in s.log
    assert s.stop() == 0
    assert "Traceback" not in s.log


def test_a_missing_device_is_a_clear_error_not_a_traceback():
    s = Serve("--device", "no-such-card")
    assert s.proc.wait(timeout=30) == 2
    s._reader.join(timeout=5)
    assert "cannot open output device 'no-such-card'" in s.log
    assert "Traceback" not in s.log


def test_http_port_serves_the_engine_over_http():
    http = free_port(socket.SOCK_STREAM)
    s = Serve("--no-jack-fallback", "--http-port", str(http))
    s.wait_for("ready")
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=2) as r:
                assert r.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, s.log
            time.sleep(0.1)
    body = json.dumps({"pitch": 69, "velocity": 100}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{http}/sound", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as r:
        audio = np.array(json.loads(r.read())["audio"])
    assert audio.shape == (64000,)  # 4 s at 16 kHz, rendered through the engine
    spec = np.abs(np.fft.rfft(audio[1600:17600] * np.hanning(16000)))
    assert abs(np.argmax(spec) - midi_hz(69)) < 2  # 1 Hz bins
    assert s.stop() == 0


@pytest.mark.jack
def test_a_sound_card_at_another_rate_is_named_with_the_option_to_pass():
    with JackDummy(44100, 256, prefix="sg-cli") as name:
        s = Serve(jack_server=name)
        assert s.proc.wait(timeout=30) == 2
        s._reader.join(timeout=5)
    assert "its rate is 44100 Hz: pass --sample-rate 44100" in s.log, s.log
    assert "Traceback" not in s.log


def osc_status_within(port: int, timeout: float) -> list | None:
    """The /status reply to one request from a fresh loopback socket, or None."""
    from pythonosc.osc_message import OscMessage

    from tone import msg

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(msg("/status"), ("127.0.0.1", port))
        try:
            return list(OscMessage(s.recv(65536)).params)
        except socket.timeout:
            return None


def test_allow_parses_networks_and_addresses():
    import ipaddress

    from synth.cli import build_parser

    args = build_parser(load="serve").parse_args(["serve", "--allow", "192.168.1.7/24", "10.0.0.5", "::1"])
    assert args.allow == [ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("10.0.0.5/32"),
                          ipaddress.ip_network("::1/128")]
    assert build_parser(load="serve").parse_args(["serve"]).allow == ()
    assert build_parser(load="serve").parse_args(["serve"]).host == "127.0.0.1"  # loopback stays the default


def test_a_bad_allow_network_is_refused_naming_the_option():
    s = Serve("--allow", "10.0.0.0/8", "10.0.0.0/33")
    assert s.proc.wait(timeout=30) == 2
    s._reader.join(timeout=5)
    assert "argument --allow: --allow: expected an IP network" in s.log and "'10.0.0.0/33'" in s.log


def test_allow_serves_only_senders_in_the_listed_networks():
    s = Serve("--no-jack-fallback", "--allow", "10.0.0.0/8", "192.168.0.0/16")
    try:
        s.wait_for("ready")
        assert osc_status_within(s.port, 1.0) is None  # 127.0.0.1 is not allowed: no reply at all
        assert osc_status_within(s.port, 1.0) is None
        s.wait_for("refused OSC from 127.0.0.1")
    finally:
        assert s.stop() == 0, s.log
    assert s.log.count("refused OSC from") == 1  # once per sender address
    assert "without --allow" not in s.log
    s = Serve("--no-jack-fallback", "--allow", "127.0.0.1")
    try:
        s.wait_for("ready")
        assert osc_status_within(s.port, 5.0) is not None
    finally:
        assert s.stop() == 0, s.log
    assert "refused" not in s.log


def test_listening_beyond_loopback_without_allow_warns_what_is_exposed():
    s = Serve("--no-jack-fallback")  # loopback: nothing to warn about
    s.wait_for("ready")
    assert s.stop() == 0
    assert "without --allow" not in s.log
    http = free_port(socket.SOCK_STREAM)
    s = Serve("--no-jack-fallback", "--host", "0.0.0.0", "--http-host", "0.0.0.0", "--http-port", str(http))
    try:
        s.wait_for("without --allow")
    finally:
        s.stop()
    warning = next(line for line in s.lines if "without --allow" in line)
    assert " WARNING: " in warning
    for risk in (f"OSC on udp://0.0.0.0:{s.port}", f"HTTP on http://0.0.0.0:{http}", "anyone who can reach",
                 "play notes", "change the timbre", "fill the note cache", "disk", "request renders over HTTP",
                 "--allow CIDR"):
        assert risk in warning, (risk, warning)
    s = Serve("--no-jack-fallback", "--host", "0.0.0.0", "--allow", "127.0.0.0/8")
    s.wait_for("ready")
    assert osc_status_within(s.port, 5.0) is not None
    assert s.stop() == 0
    assert "without --allow" not in s.log


def _jackd_of(pid: int) -> bool:
    return subprocess.run(["pgrep", "-f", f"jackd -n sound-generator-{pid} "], capture_output=True).returncode == 0


def test_a_file_as_cache_dir_is_a_startup_error_naming_the_option(tmp_path):
    path = tmp_path / "not-a-folder"
    path.write_text("x")
    s = Serve("--cache-dir", str(path))
    assert s.proc.wait(timeout=60) == 2
    s._reader.join(timeout=5)
    assert "--cache-dir: cache_dir:" in s.log and "is a file, not a folder" in s.log, s.log
    assert "UDP port" not in s.log and "Traceback" not in s.log
    assert not _jackd_of(s.proc.pid)


@pytest.mark.jack
def test_a_taken_osc_port_is_a_startup_error_and_stops_the_fallback_jackd():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{Path(__file__).parent}",
               "JACK_DEFAULT_SERVER": f"sg-none-{uuid.uuid4().hex[:8]}", "JACK_NO_START_SERVER": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "synth.cli", "serve", "--port", str(port), "--generator-factory", "tone:make",
             "--voice-mode", "oneshot"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert f"--port: cannot listen on udp://127.0.0.1:{port}" in out, out
    assert "Traceback" not in out
    assert not _jackd_of(proc.pid)  # the fallback jackd it started (no sound card here) is stopped
