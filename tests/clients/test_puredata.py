"""The Pure Data front panel (patches/sound_generator.pd), run in the real Pd, headless.

- It loads without a single error, and with its defaults it listens on UDP 9001 and announces
  that port to 127.0.0.1:9000 (``/reply/port 9001``).
- Every control, driven through its receive name with ``pd -send`` (what a click does), sends
  the exact OSC message the server's table expects: a transcript test against a UDP socket,
  which also answers, so the test sees the patch parse and print the server's replies. The same
  for the live controls (bend, pressure, sustain, mode, glide) and the per-note message boxes.
- With the real live server (its engine, mixer and a sounddevice stream on a private JACK
  dummy server, captured by a JACK client): the patch sets a timbre and plays a note; the server
  renders exactly that note, plays it (the captured audio has the note's pitch), and its
  ``/ready`` reply comes back to the patch.
"""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc.osc_message import OscMessage

from osc_server import addresses
from synth.params import NoteParams

from pd_runner import MAIN_PATCH, Pd, free_udp_port, pd_errors

pytestmark = pytest.mark.puredata


def quit_after(tmp_path: Path, ms: int) -> Path:
    """A second patch that quits Pd `ms` after loading (the shipped one never quits by itself)."""
    path = tmp_path / "quit_after.pd"
    path.write_text(textwrap.dedent(f"""\
        #N canvas 0 0 300 200 12;
        #X obj 10 10 loadbang;
        #X obj 10 40 del {ms};
        #X msg 10 70 \\; pd quit;
        #X connect 0 0 1 0;
        #X connect 1 0 2 0;
        """))
    return path


def test_patch_loads_without_errors_and_uses_the_default_ports(tmp_path: Path) -> None:
    catcher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    catcher.bind(("127.0.0.1", 9000))  # fails here if something already serves 9000 on this machine
    catcher.settimeout(10)
    pd = Pd(MAIN_PATCH, quit_after(tmp_path, 1500))
    data, _ = catcher.recvfrom(65536)
    # Pd holds the reply port while it runs.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        with pytest.raises(OSError):
            probe.bind(("0.0.0.0", 9001))
    rc = pd.wait_exit()
    catcher.close()
    assert rc == 0, pd.output
    assert pd_errors(pd.output) == [], pd.output
    announce = OscMessage(data)
    assert (announce.address, announce.params) == ("/reply/port", [9001.0])


def reply(address: str, *args) -> bytes:
    return addresses.build(address, *args)


def test_every_control_sends_what_the_server_table_expects(tmp_path: Path, osc_catcher) -> None:
    reply_port = free_udp_port()
    controls = [
        "sg-latent-3 2.5",            # a knob
        "sg-source 2",                # source: synthetic
        "sg-quality-percussive 1",    # a quality toggle
        "sg-pitch 64",                # pitch and velocity boxes, then play / off
        "sg-velocity 90",
        "sg-play bang",
        "sg-off bang",
        "sg-octave 3",                # one-octave keyboard: key 7 (G) in octave 3 = 55
        "sg-key 7",
        "sg-qualities-clear-out bang",
        "sg-gain -6",
        "sg-prerender bang",
        "sg-panic bang",
        "sg-status bang",             # /status, preceded by /reply/port
        "sg-latent-reset bang",       # 'zero' sets all 16 knobs to 0
    ]
    pd = Pd(MAIN_PATCH, sends=[f"sg-reply-port {reply_port}", f"sg-server 127.0.0.1 {osc_catcher.port}",
                               *controls])
    expected = [
        ("/reply/port", [float(reply_port)]),
        ("/latent/3", [2.5]),
        ("/source", ["synthetic"]),
        ("/quality/percussive", [1.0]),
        ("/note", [64.0, 90.0]),
        ("/note/off", [64.0]),
        ("/note", [55.0, 90.0]),
        ("/qualities", []),
        ("/gain", [-6.0]),
        ("/prerender", []),
        ("/panic", []),
        ("/reply/port", [float(reply_port)]),
        ("/status", []),
        *[(f"/latent/{i}", [0.0]) for i in reversed(range(16))],
    ]
    got = osc_catcher.receive(len(expected))
    try:
        assert [(m.address, m.params) for m, _ in got] == expected
        assert osc_catcher.nothing_more()
        # The server's table accepts every one of them (Pd sends numbers as floats).
        for address, args in expected:
            addresses.parse_message(address, args)
        # Replies go to the announced port; the patch parses and prints them.
        for packet in (reply("/ready", 64, 100),
                       reply("/error", "/note", "pitch: expected an integer 9..120, got 130"),
                       reply("/prerender/progress", 5, 10),
                       reply("/status", 1, 2, 0.5, 3, 4, 0, 0, -6.0, 0)):
            osc_catcher.sock.sendto(packet, ("127.0.0.1", reply_port))
        pd.wait_for("sg-reply: status 1 2 0.5 3 4 0 0 -6 0")
    finally:
        out = pd.stop()
    assert "sg-reply: ready 64 100" in out
    assert "sg-reply: error /note pitch: expected an integer 9..120, got 130" in out.replace("\\", "")
    assert "sg-reply: prerender progress 5 10" in out
    assert pd_errors(out.replace("sg-reply: error", "")) == [], out


def test_preset_controls_send_the_names_typed(tmp_path: Path, osc_catcher) -> None:
    """The name box with save / load / list, and the morph slider between names a and b; the
    server's /preset/... replies reach the patch."""
    reply_port = free_udp_port()
    controls = [
        "sg-preset-name symbol warm-pad",  # typing a name (a symbol box)
        "sg-preset-load bang",
        "sg-preset-save bang",
        "sg-preset-list bang",
        "sg-preset-a symbol bell",
        "sg-preset-b symbol warm-pad",
        "sg-preset-morph 0.25",            # the morph slider
    ]
    pd = Pd(MAIN_PATCH, sends=[f"sg-reply-port {reply_port}", f"sg-server 127.0.0.1 {osc_catcher.port}",
                               *controls])
    try:
        got = [(m.address, m.params) for m, _ in osc_catcher.receive(5)]
        assert got[:4] == [("/reply/port", [float(reply_port)]), ("/preset/load", ["warm-pad"]),
                           ("/preset/save", ["warm-pad"]), ("/preset/list", [])]
        address, (a, b, t) = got[4]
        assert (address, a, b, t) == ("/preset/morph", "bell", "warm-pad", pytest.approx(0.25, abs=1e-3))
        assert osc_catcher.nothing_more()
        for address, args in got:
            addresses.parse_message(address, args)
        for packet in (reply("/preset/loaded", "warm-pad"), reply("/preset/saved", "warm-pad"),
                       reply("/preset/list", "bell", "warm-pad")):
            osc_catcher.sock.sendto(packet, ("127.0.0.1", reply_port))
        pd.wait_for("sg-reply: preset list bell warm-pad")
    finally:
        out = pd.stop()
    assert "sg-reply: preset loaded warm-pad" in out
    assert "sg-reply: preset saved warm-pad" in out
    assert pd_errors(out) == [], out


def test_live_controls_send_what_the_server_table_expects(osc_catcher) -> None:
    """The expression panel (bend slider and cents box, pressure, sustain, mode, glide) and the
    per-note message boxes (what clicking `; sg-note-bend 60 -50` sends)."""
    reply_port = free_udp_port()
    controls = [
        "sg-bend 600",               # the bend slider (+-1200 cents)
        "sg-bend-cents -3000",       # the cents box reaches the whole +-4800
        "sg-bend-centre bang",       # 'centre'
        "sg-pressure 0.5",
        "sg-sustain 1",
        "sg-sustain 0",
        "sg-mode 1",                 # mono
        "sg-mode 0",                 # poly
        "sg-glide 250",
        "sg-note-bend 60 -50",
        "sg-note-pressure 60 0.8",
    ]
    pd = Pd(MAIN_PATCH, sends=[f"sg-reply-port {reply_port}", f"sg-server 127.0.0.1 {osc_catcher.port}",
                               *controls])
    expected = [
        ("/reply/port", [float(reply_port)]),
        ("/bend", [600.0]),
        ("/bend", [-3000.0]),
        ("/bend", [0.0]),
        ("/pressure", [0.5]),
        ("/sustain", [1.0]),
        ("/sustain", [0.0]),
        ("/mode", ["mono"]),
        ("/mode", ["poly"]),
        ("/glide", [250.0]),
        ("/note/bend", [60.0, -50.0]),
        ("/note/pressure", [60.0, 0.8]),
    ]
    try:
        got = [(m.address, m.params) for m, _ in osc_catcher.receive(len(expected))]
        assert osc_catcher.nothing_more()
    finally:
        out = pd.stop()
    # A slider's value passes through its pixel grid (2400 cents over 200 px, in 1/100 px steps);
    # OSC floats are 32-bit.
    assert [a for a, _ in got] == [a for a, _ in expected]
    for (address, params), (_, want) in zip(got, expected):
        assert params == [pytest.approx(v, abs=0.2) if isinstance(v, float) else v for v in want], address
        addresses.parse_message(address, params)
    assert pd_errors(out) == [], out


class RecordingTone:
    """The live server's generator for this test: a sine at the note's pitch; keeps every note."""

    model_version = "pd-test-tone"

    def __init__(self) -> None:
        self.rendered: list[NoteParams] = []

    def render(self, params: NoteParams, sample_rate: int) -> np.ndarray:
        self.rendered.append(params)
        t = np.arange(2 * sample_rate) / sample_rate
        f0_hz = 440.0 * 2 ** ((params.pitch - 69) / 12)
        return (0.5 * np.sin(2 * np.pi * f0_hz * t)).astype(np.float32)


@pytest.mark.jack
@pytest.mark.slow
def test_the_patch_plays_the_real_server(tmp_path: Path) -> None:
    import sounddevice as sd
    from bench.jack import Capture, JackDummy

    from osc_server.server import LiveServer, ServerConfig

    with JackDummy(48000, 256, prefix="sg-pd") as jack_name:
        devices = [i for i, d in enumerate(sd.query_devices())
                   if "JACK" in sd.query_hostapis(d["hostapi"])["name"] and d["max_output_channels"] > 0]
        assert devices, "PortAudio does not see the JACK dummy server"
        capture = Capture(jack_name, seconds=20)
        before = {p.name for p in capture.client.get_ports(is_audio=True, is_output=True)}
        generator = RecordingTone()
        server = LiveServer(generator, ServerConfig(port=0, device=devices[0], sample_rate=48000, blocksize=256,
                                                     cache_mb=64, jack_fallback=False)).start()
        try:
            # The stream's output ports, all into the one capture port (JACK sums them).
            outputs = [p for p in capture.client.get_ports(is_audio=True, is_output=True) if p.name not in before]
            assert outputs, "the server's stream registered no JACK output port"
            for port in outputs:
                capture.client.connect(port, capture.port)
            reply_port = free_udp_port()
            start = capture.now()
            pd = Pd(MAIN_PATCH, sends=[
                f"sg-reply-port {reply_port}", f"sg-server 127.0.0.1 {server.address[1]}",
                "sg-latent-3 2.5", "sg-source 1", "sg-quality-percussive 1", "sg-quality-reverb 1",
                "sg-pitch 64", "sg-velocity 90", "sg-play bang",
            ])
            try:
                pd.wait_for("sg-reply: ready 64 100")  # the note landed; the reply reached the patch
                time.sleep(0.5)
                audio = capture.read(start, capture.now())
            finally:
                out = pd.stop()
            transport = server.transport
            assert transport.errors == 0, out
            assert list(transport.reply_ports.values()) == [reply_port]  # keyed by the sender (host, port)
            # The server rendered exactly the note the panel describes (velocity 90 is rendered at
            # its nearest NSynth layer, 100, and played at 90 % of that level).
            assert generator.rendered == [NoteParams(
                pitch=64, velocity=100, source="electronic", qualities=("percussive", "reverb"),
                latent_sample=(0.0,) * 3 + (2.5,) + (0.0,) * 12)]
        finally:
            server.close()
            capture.close()
    sounding = audio[np.abs(audio) > 1e-4]
    assert sounding.size > 0.3 * 48000, "the note was not heard"
    spectrum = np.abs(np.fft.rfft(sounding * np.hanning(sounding.size)))
    assert np.argmax(spectrum) * 48000 / sounding.size == pytest.approx(329.63, abs=3.0)
    # Level: the tone's 0.5, times 90/100 for the velocity, on every channel of the stream.
    assert np.max(np.abs(sounding)) == pytest.approx(0.5 * 0.9 * len(outputs), rel=0.05)
    assert pd_errors(out) == [], out
