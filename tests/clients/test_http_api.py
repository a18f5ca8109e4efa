"""The HTTP API (`osc_server.http_api`): the seed README's `POST /sound`, the WAV download, errors.

Most tests drive the FastAPI app in-process (TestClient over httpx) with an injected render
function, a numpy sine whose frequency and level follow the note, so each test can check that the
audio came from *this* note. One test runs a real uvicorn on a loopback port and makes the seed
README's `requests.post` call, word for word apart from the URL.
"""

from __future__ import annotations

import io
import json
import socket
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
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(render), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn exited while starting"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
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
