"""The HTTP API (`osc_server.http_api`): the seed README's `POST /sound`, the WAV download, errors.

Most tests drive the FastAPI app in-process (TestClient over httpx) with an injected render
function, a numpy sine whose frequency and level follow the note, so each test can check that the
audio came from *this* note. One test runs a real uvicorn on a loopback port and makes the seed
README's `requests.post` call, word for word apart from the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import ipaddress
import json
import socket
import sys
import threading
import time

import numpy as np
import pytest
import requests
import soundfile as sf
import uvicorn
from fastapi.testclient import TestClient

from osc_server.http_api import create_app
from synth.params import NoteParams

N_SAMPLES = 64000
SEED_INPUTS = {
    "velocity": 75,
    "pitch": 60,
    "source": "acoustic",
    "qualities": ["bright", "percussive"],
    "latent_sample": [0.0] * 16,
}


class ToneRender:
    """Stands in for the engine: 4 s of sine at the note's frequency, level = velocity / 127."""

    def __init__(self) -> None:
        self.calls: list[tuple[NoteParams, int]] = []

    def __call__(self, params: NoteParams, sample_rate: int) -> np.ndarray:
        self.calls.append((params, sample_rate))
        f0_hz = 440.0 * 2.0 ** ((params.pitch - 69) / 12)
        t = np.arange(4 * sample_rate) / sample_rate
        return (params.velocity / 127 * np.sin(2 * np.pi * f0_hz * t)).astype(np.float32)


def peak_hz(audio: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * sample_rate / len(audio))


@pytest.fixture
def render() -> ToneRender:
    return ToneRender()


@pytest.fixture
def client(render: ToneRender) -> TestClient:
    return TestClient(create_app(render, max_body_bytes=4096))


def test_post_sound_returns_the_rendered_note(client: TestClient, render: ToneRender) -> None:
    res = client.post("/sound", json=SEED_INPUTS)
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    audio = np.squeeze(json.loads(res.text)["audio"])
    assert audio.shape == (N_SAMPLES,)
    # The render saw the seed's note, canonicalised, at the original 16 kHz.
    (params, sample_rate), = render.calls
    assert sample_rate == 16000
    assert params == NoteParams.from_dict(SEED_INPUTS)
    assert peak_hz(audio, 16000) == pytest.approx(261.63, abs=0.5)
    assert np.max(np.abs(audio)) == pytest.approx(75 / 127, rel=1e-3)


def test_missing_keys_take_the_schema_defaults(client: TestClient, render: ToneRender) -> None:
    res = client.post("/sound", json={"pitch": 69})
    assert res.status_code == 200
    (params, _), = render.calls
    assert params == NoteParams(pitch=69)
    assert peak_hz(np.array(res.json()["audio"]), 16000) == pytest.approx(440.0, abs=0.5)


def test_pure_data_style_float_pitch_is_accepted(client: TestClient, render: ToneRender) -> None:
    assert client.post("/sound", json={"pitch": 72.0, "velocity": 100.0}).status_code == 200
    assert render.calls[0][0].pitch == 72


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"pitch": 200}, "pitch", "9..120"),
        ({"pitch": 60.5}, "pitch", "integer"),
        ({"velocity": 0}, "velocity", "1..127"),
        ({"source": "brass"}, "source", "acoustic, electronic, synthetic"),
        ({"qualities": ["shiny"]}, "qualities", "bright"),
        ({"qualities": "bright"}, "qualities", "list"),
        ({"latent_sample": [0.0] * 15}, "latent_sample", "16"),
        ({"latent_sample": [0.0] * 15 + [9.0]}, "latent_sample", "[-7, 7]"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_fields_get_422_naming_the_field(client, render, body, field, words) -> None:
    res = client.post("/sound", json=body)
    assert res.status_code == 422
    assert res.headers["content-type"] == "application/json"
    payload = res.json()
    assert payload["field"] == field
    assert payload["error"].startswith(field)
    assert words in payload["error"]
    assert render.calls == []  # nothing rendered for a bad note


def test_the_error_message_is_the_schemas_own(client: TestClient) -> None:
    payload = client.post("/sound", json={"pitch": 200}).json()
    assert payload == {"error": "pitch: expected an integer 9..120, got 200", "field": "pitch"}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2, 3]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_gets_400(client: TestClient, raw: bytes) -> None:
    res = client.post("/sound", content=raw, headers={"content-type": "application/json"})
    assert res.status_code == 400
    assert res.json()["field"] == "body"


def test_oversized_bodies_get_413_before_parsing(client: TestClient, render: ToneRender) -> None:
    padded = json.dumps(SEED_INPUTS) + " " * 5000  # valid JSON, just too long
    res = client.post("/sound", content=padded, headers={"content-type": "application/json"})
    assert res.status_code == 413
    assert res.json()["field"] == "body"
    assert "4096" in res.json()["error"]
    # Without Content-Length (chunked), the bound holds while reading.
    res = client.post("/sound", content=iter([padded[:3000].encode(), padded[3000:].encode()]))
    assert res.status_code == 413
    assert render.calls == []


def test_wav_download_is_the_same_note(client: TestClient) -> None:
    as_json = np.array(client.post("/sound", json=SEED_INPUTS).json()["audio"])
    res = client.post("/sound.wav", json=SEED_INPUTS)
    assert res.status_code == 200
    assert res.headers["content-type"] == "audio/wav"
    assert res.headers["content-disposition"].startswith('attachment; filename="note_acoustic_060_075_')
    audio, sample_rate = sf.read(io.BytesIO(res.content), dtype="float32")
    info = sf.info(io.BytesIO(res.content))
    assert (sample_rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert audio.shape == (N_SAMPLES,)
    np.testing.assert_allclose(audio, as_json, atol=1 / 32767 + 1e-6)


def test_wav_download_validates_like_sound(client: TestClient) -> None:
    res = client.post("/sound.wav", json={"source": "brass"})
    assert res.status_code == 422
    assert res.json()["field"] == "source"


def test_openapi_documents_the_request_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/sound", "/sound.wav"):
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        props = schema["properties"]
        assert (props["pitch"]["minimum"], props["pitch"]["maximum"]) == (9, 120)
        assert props["source"]["enum"] == ["acoustic", "electronic", "synthetic"]
        assert len(props["qualities"]["items"]["enum"]) == 10
        assert props["latent_sample"]["minItems"] == props["latent_sample"]["maxItems"] == 16
    responses = spec["paths"]["/sound"]["post"]["responses"]
    assert {"200", "400", "413", "422"} <= set(responses)
    assert client.get("/health").json() == {"status": "ok"}


@pytest.fixture
def live_server(render: ToneRender):
    """The app on a real uvicorn, on a loopback port the OS picked."""
    with running(create_app(render)) as url:
        yield url


@contextlib.contextmanager
def running(app):
    """`app` on a real uvicorn (one event loop, as in `serve`), on a loopback port the OS picked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited while starting"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # uvicorn runs the app's shutdown (the encoder processes stop)
        thread.join(timeout=10)
        sock.close()


def test_seed_readme_call_against_a_real_server(live_server: str, render: ToneRender) -> None:
    # The seed README's "Production" snippet, with the URL of this test's server.
    URL = f"{live_server}/sound"
    res = requests.post(URL, json={
        'velocity': 75,
        'pitch': 60,
        'source': 'acoustic',
        'qualities': ['bright', 'percussive'],
        'latent_sample': [0.] * 16
    })
    audio = json.loads(res.text)['audio']
    audio = np.squeeze(audio)

    assert res.status_code == 200
    assert audio.shape == (N_SAMPLES,)
    assert peak_hz(audio, 16000) == pytest.approx(261.63, abs=0.5)
    assert len(render.calls) == 1

    bad = requests.post(URL, json={**SEED_INPUTS, "pitch": 121})
    assert bad.status_code == 422
    assert bad.json()["field"] == "pitch"
    wav = requests.post(f"{live_server}/sound.wav", json=SEED_INPUTS)
    assert wav.status_code == 200
    assert sf.info(io.BytesIO(wav.content)).frames == N_SAMPLES


# --- Reliability: the audio process never stalls, the queue is bounded, bad input is never a 500 ---


def test_sound_json_is_the_original_encoding_byte_for_byte(client: TestClient, render: ToneRender) -> None:
    res = client.post("/sound", json=SEED_INPUTS)
    assert res.status_code == 200
    audio = render(NoteParams.from_dict(SEED_INPUTS), 16000)
    # What the original code wrote on the event loop; now written by the encoder process.
    assert res.content == json.dumps({"audio": audio.tolist()}, separators=(",", ":")).encode()
    assert np.array_equal(np.array(json.loads(res.content)["audio"], dtype=np.float32), audio)


def _cpu_s(thread_id: int) -> float | None:
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread_id))
    except OSError:  # the thread has ended
        return None


class StallProbe:
    """A thread that sleeps 1 ms at a time and records how late it wakes: the wait for the GIL
    (plus scheduling), which is what an audio callback in this process would wait too.

    On a busy machine the OS can be late too, so each late wake-up is charged only with what the
    busiest other thread of this process ran (its CPU clock) meanwhile: a thread that holds the
    GIL runs all along; one that waits on I/O or another process does not. `worst_gil_ms`: the
    longest such stretch."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self.gil_waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            others = [t.ident for t in threading.enumerate() if t.ident not in (None, me)]
            cpu_before = {ident: _cpu_s(ident) for ident in others}
            start = time.perf_counter()
            time.sleep(0.001)
            waited = time.perf_counter() - start
            self.lateness.append(waited - 0.001)
            ran = [after - before for ident, before in cpu_before.items()
                   if before is not None and (after := _cpu_s(ident)) is not None]
            self.gil_waits.append(min(waited, max(ran, default=0.0)))

    def __enter__(self) -> "StallProbe":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def worst_ms(self) -> float:
        return 1000 * max(self.lateness)

    @property
    def worst_gil_ms(self) -> float:
        return 1000 * max(self.gil_waits)


def test_sound_requests_do_not_stall_the_process(live_server: str) -> None:
    """While 5 `POST /sound` are in flight, no thread of the server's process holds the GIL for
    10 ms. Encoding 64000 floats to JSON in this process held it ~40 ms per request."""
    # Pure-Python code gives the GIL up every 1 ms: what is left is C code that holds it.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    # Not measured here: a full collection of the test runner's own heap (20-60 ms in pytest).
    gc.collect()
    gc.freeze()
    try:
        assert requests.post(f"{live_server}/sound", json=SEED_INPUTS).status_code == 200  # encoder started
        bodies: list[bytes] = []

        def post() -> None:
            res = requests.post(f"{live_server}/sound", json={**SEED_INPUTS, "pitch": 48 + len(bodies)})
            bodies.append(res.content)  # parsed only after the probe stops (json.loads holds the GIL)

        with StallProbe() as probe:
            posts = [threading.Thread(target=post) for _ in range(5)]
            for thread in posts:
                thread.start()
            for thread in posts:
                thread.join(timeout=30)
    finally:
        sys.setswitchinterval(previous)
        gc.unfreeze()
    assert [len(json.loads(body)["audio"]) for body in bodies] == [N_SAMPLES] * 5
    assert probe.worst_gil_ms < 10, (f"a thread held the GIL {probe.worst_gil_ms:.1f} ms "
                                     f"(latest wake-up {probe.worst_ms:.1f} ms)")


class GatedRender(ToneRender):
    """A render that blocks until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def __call__(self, params: NoteParams, sample_rate: int) -> np.ndarray:
        self.started.release()
        assert self.gate.wait(timeout=30)
        return super().__call__(params, sample_rate)


def test_a_full_render_queue_answers_503_with_retry_after() -> None:
    render = GatedRender()
    app = create_app(render, max_rendering=1, max_waiting=1)
    with running(app) as url:
        answers: dict[str, requests.Response] = {}

        def post(name: str, path: str) -> None:
            answers[name] = requests.post(f"{url}{path}", json=SEED_INPUTS, timeout=30)

        first = threading.Thread(target=post, args=("rendering", "/sound.wav"))
        first.start()
        assert render.started.acquire(timeout=10)  # one render is running...
        second = threading.Thread(target=post, args=("waiting", "/sound"))
        second.start()
        deadline = time.monotonic() + 10
        while app.state.render_queue.admitted < 2:  # ...and one request waits for it
            assert time.monotonic() < deadline, "the second request was not queued"
            time.sleep(0.01)

        for path in ("/sound", "/sound.wav"):
            busy = requests.post(f"{url}{path}", json=SEED_INPUTS, timeout=10)
            assert busy.status_code == 503
            assert busy.headers["content-type"] == "application/json"
            assert busy.json()["field"] == "server"
            assert "busy" in busy.json()["error"]
            assert 1 <= int(busy.headers["Retry-After"]) <= 60
        assert requests.get(f"{url}/health", timeout=10).status_code == 200  # not queued behind renders

        render.gate.set()
        first.join(timeout=30)
        second.join(timeout=30)
        assert answers["rendering"].status_code == 200
        assert answers["waiting"].status_code == 200
        assert len(render.calls) == 2  # the refused requests never reached the render
        assert app.state.render_queue.admitted == 0
        assert requests.post(f"{url}/sound.wav", json=SEED_INPUTS, timeout=10).status_code == 200


def test_a_render_timeout_is_a_504_and_a_render_failure_a_500() -> None:
    def timing_out(params: NoteParams, sample_rate: int) -> np.ndarray:
        raise TimeoutError("the render took more than 30 s")

    def failing(params: NoteParams, sample_rate: int) -> np.ndarray:
        raise RuntimeError("the model is not loaded")

    for path in ("/sound", "/sound.wav"):
        res = TestClient(create_app(timing_out)).post(path, json=SEED_INPUTS)
        assert res.status_code == 504
        assert res.json() == {"error": "render: timed out (the render took more than 30 s)", "field": "server"}

        res = TestClient(create_app(failing)).post(path, json=SEED_INPUTS)
        assert res.status_code == 500
        assert res.headers["content-type"] == "application/json"
        assert res.json() == {"error": "render failed: RuntimeError: the model is not loaded", "field": "server"}


@pytest.fixture
def full_size_client(render: ToneRender) -> TestClient:
    return TestClient(create_app(render))  # the default 64 KB body limit


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 60000,  # json.loads alone: RecursionError
        b'{"pitch": ' + b"[" * 30000 + b"]" * 30000 + b"}",
        b'{"a":' * 10000 + b"1" + b"}" * 10000,
        b"[" * 33 + b"]" * 33,  # just over the limit
    ],
)
def test_deep_nesting_gets_400_naming_the_body(full_size_client: TestClient, render: ToneRender, raw: bytes) -> None:
    res = full_size_client.post("/sound", content=raw, headers={"content-type": "application/json"})
    assert res.status_code == 400
    assert res.json()["field"] == "body"
    assert "nested deeper than 32 levels" in res.json()["error"]
    assert render.calls == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"source": "' + b'\\"[' * 20000,  # an unclosed string of escaped quotes (and brackets)
        b'"' + b'\\"' * 30000,
        b"[" * 40 + b'"' + b"\\" * 60000,
    ],
)
def test_pathological_bodies_are_refused_quickly(full_size_client: TestClient, raw: bytes) -> None:
    started = time.perf_counter()
    res = full_size_client.post("/sound", content=raw, headers={"content-type": "application/json"})
    assert time.perf_counter() - started < 2  # a regex for JSON strings took 18 s on the first one
    assert (res.status_code, res.json()["field"]) == (400, "body")


def test_nesting_within_the_limit_and_brackets_in_strings_are_not_refused(full_size_client: TestClient) -> None:
    in_limit = b'{"pitch": ' + b"[" * 31 + b"]" * 31 + b"}"  # 32 levels: parsed, then the field is wrong
    res = full_size_client.post("/sound", content=in_limit, headers={"content-type": "application/json"})
    assert (res.status_code, res.json()["field"]) == (422, "pitch")
    in_string = json.dumps({"source": "[" * 1000 + '"{' * 100}).encode()
    res = full_size_client.post("/sound", content=in_string, headers={"content-type": "application/json"})
    assert (res.status_code, res.json()["field"]) == (422, "source")


@pytest.mark.parametrize(
    "raw, field, got",
    [
        ('{"pitch": %s}' % ("6" * 400), "pitch", "an integer of 400 digits"),
        ('{"pitch": -%s}' % ("6" * 400), "pitch", "an integer of 400 digits"),
        ('{"velocity": %s}' % ("1" * 5000), "velocity", "an integer of 5000 digits"),  # past int()'s limit
        ('{"pitch": 60, "latent_sample": [%s]}' % ", ".join(["0"] * 15 + ["9" * 400]), "latent_sample",
         "an integer of 400 digits"),
        ('{"velocity": 1e400}', "velocity", "1e400, which is not a finite double"),
        ('{"pitch": NaN}', "pitch", "NaN"),
        ('{"latent_sample": [Infinity]}', "latent_sample", "Infinity"),
        ('{"pitch": -Infinity}', "pitch", "-Infinity"),
        ('{"qualities": [%s.0]}' % ("9" * 400), "qualities", "not a finite double"),
    ],
)
def test_huge_and_non_finite_numbers_get_422_naming_the_field(
    full_size_client: TestClient, render: ToneRender, raw: str, field: str, got: str
) -> None:
    res = full_size_client.post("/sound", content=raw.encode(), headers={"content-type": "application/json"})
    assert res.status_code == 422
    payload = res.json()
    assert payload["field"] == field
    assert payload["error"].startswith(field)
    assert "finite number of at most 20 digits" in payload["error"]
    assert got in payload["error"]
    assert render.calls == []


def test_a_20_digit_integer_is_still_checked_by_the_schema(full_size_client: TestClient) -> None:
    res = full_size_client.post("/sound", content=b'{"pitch": 99999999999999999999}',
                                headers={"content-type": "application/json"})
    assert res.json() == {"error": "pitch: expected an integer 9..120, got 99999999999999999999", "field": "pitch"}


def asgi_post(app, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict]:
    """One raw ASGI request (headers exactly as given, which HTTP clients would correct)."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/sound", "raw_path": b"/sound", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


@pytest.mark.parametrize("declared", [b"9" * 5000, "\u00b2".encode("latin-1"), b"99999999999999999999"])
def test_an_absurd_content_length_is_a_413_not_a_500(render: ToneRender, declared: bytes) -> None:
    status, payload = asgi_post(create_app(render), b'{"pitch": 60}', [(b"content-length", declared)])
    assert (status, payload["field"]) == (413, "body")
    assert render.calls == []


def test_allow_refuses_other_clients_with_403(render: ToneRender) -> None:
    app = create_app(render, allow=[ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("::1/128")])
    for host in ("192.168.1.20", "::1", "::ffff:192.168.1.20"):
        inside = TestClient(app, client=(host, 5000))
        assert inside.get("/health").status_code == 200, host
        assert inside.post("/sound.wav", json=SEED_INPUTS).status_code == 200, host
    for host in ("10.0.0.7", "192.168.2.1", "::2", "testclient"):
        outside = TestClient(app, client=(host, 5000))
        for res in (outside.post("/sound", json=SEED_INPUTS), outside.get("/health"), outside.get("/openapi.json")):
            assert res.status_code == 403, host
            assert res.headers["content-type"] == "application/json"
            assert res.json() == {"error": f"client: {host} is not in --allow (192.168.1.0/24, ::1/128)",
                                  "field": "client"}
    assert len(render.calls) == 3  # only the allowed clients' notes were rendered
    # Without `allow`, everyone is served.
    assert TestClient(create_app(render), client=("10.0.0.7", 5000)).get("/health").status_code == 200


def test_a_killed_encoder_process_is_replaced(render: ToneRender) -> None:
    app = create_app(render)
    with TestClient(app) as client:  # the app's lifespan: the encoders stop at the end
        assert client.post("/sound", json=SEED_INPUTS).status_code == 200
        (worker,) = app.state.encoder._all
        worker.proc.kill()
        worker.proc.wait()
        res = client.post("/sound", json=SEED_INPUTS)
        assert res.status_code == 200
        assert len(res.json()["audio"]) == N_SAMPLES
        (replacement,) = app.state.encoder._all
        assert replacement is not worker
    assert replacement.proc.poll() is not None  # shut down with the app


def test_openapi_documents_the_error_answers(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/sound"]["post"]["responses"]
    assert {"200", "400", "403", "413", "422", "500", "503", "504"} <= set(responses)
