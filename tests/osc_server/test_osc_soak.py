"""Soak: `sound-generator serve` as a performer runs it, through a JACK dummy sound card, while
everything a stage can throw at it happens at once for about a minute and a half:

- playing: 12- to 32-note chords every 100 ms with note-offs, a /sync after each chord;
- pre-rendering: a new timbre and /prerender every 10 s, and bundles of 256 /prerender messages;
- a 65 KB bundle of 3249 /prerender messages (refused whole: the bundle limit);
- fuzzing: random datagrams and random messages to real addresses;
- a full cache disk: --cache-dir on a 256 KB tmpfs;
- HTTP load: POST /sound from two threads, and bodies nested 20000 deep.

Afterwards the server must answer /status, play a note at its pitch (measured in the capture),
have answered every /sync and /prerender, and lose no /ready; its memory must come back to
within 100 MB of its level before the flood. Bounded: SOAK_S seconds (default 75) of load, about
two minutes in all. Twice: `serve --voice-mode oneshot` with the test tone (bench/tone.py) in the
server's real render processes, and `serve` as the README starts it (live voices, the shipped
weights). The load comes from a process of its own (`flood`), the capture client is the test's.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from bench.jack import Capture, JackDummy
from bench.server import zero_blocks_inside_sound
from test_osc_cli import ROOT, Serve, free_port
from tone import Client, bundle, midi_hz, msg

pytestmark = [pytest.mark.slow, pytest.mark.jack]
SOAK_S = float(os.environ.get("SOAK_S", "75"))
SR = 48000


def _seen(client: Client, address: str) -> list[list]:
    """Replies at `address` so far (not consumed)."""
    with client._cond:
        return [args for a, args in client.replies if a == address]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Player(threading.Thread):
    """Chords every 100 ms; a /sync after each; a new timbre + /prerender every 10 s."""

    def __init__(self, port: int, seconds: float):
        super().__init__(daemon=True)
        self.client = Client(("127.0.0.1", port))
        self.seconds = seconds
        self.syncs = 0
        self.prerenders = 0
        self.rng = random.Random(1)

    def run(self) -> None:
        c, rng = self.client, self.rng
        t_end = time.monotonic() + self.seconds
        next_timbre = 0.0
        sounding: list[int] = []
        while time.monotonic() < t_end:
            now = time.monotonic()
            if now >= next_timbre:
                c.send_msg("/latent", *[rng.uniform(-3, 3) for _ in range(16)])
                c.send_msg("/prerender", 48, 72)
                self.prerenders += 1
                next_timbre = now + 10.0
            for p in sounding:
                c.send_msg("/note/off", p)
            sounding = rng.sample(range(36, 90), rng.randint(12, 32))
            for p in sounding:
                c.send_msg("/note", p, rng.choice((40, 64, 90, 110, 127)))
            self.syncs += 1
            c.send_msg("/sync", self.syncs)
            time.sleep(max(0.0, 0.1 - (time.monotonic() - now)))
        for p in sounding:
            c.send_msg("/note/off", p)


def _fuzz(port: int, seconds: float, stop: threading.Event) -> None:
    rng = random.Random(2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addresses = ["/note", "/note/off", "/latent", "/latent/3", "/source", "/qualities", "/quality/bright",
                 "/gain", "/sync", "/reply/port", "/nope", "/prerender"]
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end and not stop.is_set():
        for _ in range(20):
            kind = rng.random()
            if kind < 0.4:
                data = rng.randbytes(rng.randint(1, 2000))
            else:
                address = rng.choice(addresses)
                args = [rng.choice((rng.randint(-10**6, 10**6), rng.uniform(-1e9, 1e9), "x" * rng.randint(0, 300),
                                    float("nan"))) for _ in range(rng.randint(0, 17))]
                if address in ("/gain", "/reply/port"):
                    args = ["bad"]  # a valid /gain would change the level the final check measures
                data = msg(address, *args)
            sock.sendto(data, ("127.0.0.1", port))
        time.sleep(0.02)  # ~1000 packets/s
    sock.close()


def _http_load(port: int, stop: threading.Event, counts: dict, lock: threading.Lock) -> None:
    rng = random.Random(threading.get_ident())
    nested = ("[" * 20000 + "]" * 20000).encode()  # under the 64 KB body limit: the depth check
    while not stop.is_set():
        if rng.random() < 0.3:
            body, want = nested, "4xx"
        else:
            body, want = json.dumps({"pitch": rng.randint(40, 80), "velocity": 100}).encode(), "200"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/sound", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status = r.status
                r.read()
        except urllib.error.HTTPError as e:
            status = e.code
        with lock:
            counts[status] = counts.get(status, 0) + 1
            if want == "4xx" and not 400 <= status < 500 or want == "200" and status not in (200, 503):
                counts.setdefault("unexpected", []).append((want, status))


def flood(port: int, http_port: int, seconds: float) -> None:
    """The soak's load, run in a process of its own (`python -c`): chords with /sync (`Player`),
    fuzzing, HTTP load from two threads, a 3249-message bundle and bundles of 256 /prerender.
    Waits for the player's replies, then prints one JSON line of what came back."""
    stop = threading.Event()
    player = Player(port, seconds)
    fuzzer = threading.Thread(target=_fuzz, args=(port, seconds, stop), daemon=True)
    counts: dict = {}
    lock = threading.Lock()
    http = [threading.Thread(target=_http_load, args=(http_port, stop, counts, lock), daemon=True)
            for _ in range(2)]
    flooder = Client(("127.0.0.1", port))
    for t in (player, fuzzer, *http):
        t.start()
    big = bundle(0, *[msg("/prerender")] * 3249)
    assert len(big) > 60000
    flooder.send(big)
    big_refused = "256" in flooder.wait_for("/error", timeout=5)[1]  # refused whole
    for _ in range(5):
        flooder.send(bundle(0, *[msg("/prerender", 40, 80)] * 256))  # at the limit: coalesced
        time.sleep(seconds / 6)
    player.join(seconds + 30)
    stop.set()
    fuzzer.join(10)
    for t in http:
        t.join(40)
    p = player.client
    deadline = time.monotonic() + 30
    while len(_seen(p, "/synced")) < player.syncs and time.monotonic() < deadline:
        time.sleep(0.1)
    while len(_seen(p, "/prerender/done")) < player.prerenders and time.monotonic() < deadline:
        time.sleep(0.1)
    synced = {args[0] for args in _seen(p, "/synced")}
    print(json.dumps({
        "big_refused": big_refused, "syncs": player.syncs,
        "unsynced": len(set(range(1, player.syncs + 1)) - synced),
        "player_errors": _seen(p, "/error"), "prerenders": player.prerenders,
        "prerenders_done": len(_seen(p, "/prerender/done")),
        "http": {str(k): v for k, v in counts.items() if isinstance(k, int)},
        "http_unexpected": counts.get("unexpected", [])}), flush=True)
    flooder.close()
    p.close()


@pytest.fixture
def full_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a 256 KB tmpfs (the full cache disk) needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("mode", ["oneshot", "live"])
def test_soak_mixed_load_then_the_server_still_answers_and_plays_at_pitch(full_disk, mode):
    """oneshot: the test tone in the render processes (`--voice-mode oneshot`). live: `serve` as
    the README starts it, live voices with the shipped weights (the render processes play the
    shipped weights too, for the HTTP API and /prerender)."""
    http_port = free_port(socket.SOCK_STREAM)
    live = mode == "live"
    with JackDummy(SR, 256, prefix="sg-soak") as jack:
        cap = Capture(jack, seconds=SOAK_S + 40, name="sg-soak-capture")
        before = {q.name for q in cap.client.get_ports(is_audio=True, is_output=True)}
        s = Serve("--cache-dir", str(full_disk), "--cache-mb", "64", "--http-port", str(http_port),
                  "--gain-db", "-12", jack_server=jack, tone=not live)
        try:
            s.wait_for("ready", timeout=120)
            ours = [q for q in cap.client.get_ports(is_audio=True, is_output=True) if q.name not in before]
            assert ours, "the server's output ports are not in the JACK graph"
            for q in ours:
                cap.client.connect(q, cap.port)
            pid = s.proc.pid

            # Warm-up: the caches and pools fill, then the memory level before any flood.
            warm = Player(s.port, 8.0)
            warm.start()
            warm.join()
            time.sleep(2.0)
            rss_before = _rss_mb(pid)
            probe = Client(("127.0.0.1", s.port))
            probe.send_msg("/status")
            underruns_before = probe.wait_for("/status", timeout=5)[6]
            probe.close()
            f_start = cap.end_frame

            # The flood, sent from a process of its own: a Python capture client shares its
            # process's GIL, and load threads holding it there (preempted by the server's
            # real-time threads) made the capture miss cycles that the server did not.
            env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.path.dirname(__file__)}"}
            flood = subprocess.Popen(
                [sys.executable, "-c", f"from test_osc_soak import flood; flood({s.port}, {http_port}, {SOAK_S})"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            rss_during = []
            for _ in range(5):
                time.sleep(SOAK_S / 6)
                rss_during.append(round(_rss_mb(pid)))
            out, _ = flood.communicate(timeout=SOAK_S + 120)
            assert flood.returncode == 0, out[-3000:]
            result = json.loads(out.strip().splitlines()[-1])
            f_end = cap.end_frame

            # Afterwards: /status answers at once.
            c = Client(("127.0.0.1", s.port))
            c.replies.clear()
            t = time.monotonic()
            c.send_msg("/status")
            status = c.wait_for("/status", timeout=1.0)
            assert time.monotonic() - t < 1.0 and len(status) == 9
            # The 3249-message bundle was refused whole; every /sync and every /prerender of the
            # player was answered, and nothing it sent failed.
            assert result["big_refused"], result
            assert result["unsynced"] == 0, f"{result['unsynced']} of {result['syncs']} /sync unanswered"
            assert result["player_errors"] == [], result["player_errors"][:5]
            assert result["prerenders_done"] == result["prerenders"], result
            # No /ready lost: a timbre nobody played yet, 12 new notes, 12 /ready (live voices:
            # when each note's own controls were computed, which /sync does not wait for).
            c.send_msg("/latent", *[6.5] * 16)
            for pitch in range(50, 62):
                c.send_msg("/note", pitch, 100)
                c.send_msg("/note/off", pitch)
            c.sync(timeout=30)
            deadline = time.monotonic() + 20
            while len(_seen(c, "/ready")) < 12 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sorted(args[0] for args in c.take("/ready")) == list(range(50, 62))
            # The HTTP load was served, and bad bodies got 4xx.
            counts = {int(k): v for k, v in result["http"].items()}
            assert counts.get(200, 0) > 0 and any(400 <= k < 500 for k in counts), counts
            assert result["http_unexpected"] == [], result["http_unexpected"][:5]
            # The full disk switched the disk cache off once and rendering went on.
            assert s.log.count("disk cache switched off") == 1, s.log[-3000:]

            # A note at its pitch, at the sound card.
            if live:  # (a model's note: its strongest component is a harmonic of the note)
                c.send_msg("/latent", *[0.0] * 16)
                c.send_msg("/source", "synthetic")
                c.send_msg("/qualities")
            time.sleep(1.0)
            f0 = cap.end_frame
            c.send_msg("/note", 69, 127)
            c.sync()
            time.sleep(0.8)
            c.send_msg("/note/off", 69)
            audio = cap.read(f0, f0 + int(0.8 * SR))
            loud = np.flatnonzero(np.abs(audio) > 1e-3)
            assert loud.size, "the note after the soak is silent"
            seg = audio[loud[0] + 2400:loud[0] + 2400 + SR // 4]
            spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size), 8 * seg.size))
            hz = np.argmax(spec) * SR / (8 * seg.size)
            harmonic = max(1, round(hz / midi_hz(69))) if live else 1
            assert abs(1200 * np.log2(hz / (harmonic * midi_hz(69)))) < 10, hz

            # Memory came back.
            time.sleep(3.0)
            rss_after = _rss_mb(pid)
            assert rss_after - rss_before < 100, (rss_before, rss_during, rss_after)

            zero_blocks = zero_blocks_inside_sound(cap.read(max(f_start, f_end - cap.size + SR), f_end))
            print(f"soak ({mode}) {SOAK_S:g} s: rss {rss_before:.0f} -> {rss_during} -> {rss_after:.0f} MB, http {counts}, "
                  f"syncs {result['syncs']}, prerenders {result['prerenders']}, zero blocks inside sound {zero_blocks}, "
                  f"capture glitches {cap.glitches} (missed cycles {cap.gaps}), status {status}")
            # A dropped block inside a sounding note shows as exact zeros. Under this load on two
            # cores the server does under-run now and then (it counts each: /status), and the
            # capture's own missed cycles are zero-filled too: every zero block must be one of
            # those, none a block dropped without a count.
            underruns = status[6] - underruns_before
            assert zero_blocks <= cap.gaps + underruns, (zero_blocks, cap.gaps, underruns)
            c.close()
        finally:
            rc = s.stop()
            cap.close()
    assert rc == 0, s.log[-3000:]
    assert "Traceback" not in s.log, s.log[-5000:]
