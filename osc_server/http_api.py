"""The original system's HTTP API, on FastAPI: ``POST /sound`` and a WAV download of the same note.

    POST /sound       JSON note (the seed README's dict)  -> {"audio": [64000 floats]} (16 kHz, 4 s)
    POST /sound.wav   the same JSON body                  -> audio/wav, 16 kHz mono 16-bit PCM
    GET  /health                                          -> {"status": "ok"}
    GET  /openapi.json, /docs                             -> the OpenAPI description (FastAPI's)

The body is validated by `synth.params.NoteParams.from_dict`, the one place that knows the note
schema; missing keys take its defaults. Errors are JSON that names the field::

    422 {"error": "pitch: expected an integer 9..120, got 200", "field": "pitch"}
    400 {"error": "body: expected a JSON object ...", "field": "body"}     (not JSON / not an object)
    413 {"error": "body: larger than 65536 bytes", "field": "body"}       (bounded before parsing)

`render(params, sample_rate)` is injected: the live server passes its engine's cache-backed
blocking render, so a note fetched over HTTP is the same cache entry a performer plays over OSC.
It runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any, Callable

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from synth.params import (
    DEFAULTS,
    LATENT_DIM,
    LATENT_MAX,
    LATENT_MIN,
    PITCH_MAX,
    PITCH_MIN,
    QUALITIES,
    SOURCES,
    VELOCITY_LAYERS,
    VELOCITY_MAX,
    VELOCITY_MIN,
    NoteParams,
)

log = logging.getLogger("osc_server.http")

SAMPLE_RATE = 16000  # the original API's rate: 64000 samples = 4 s
DEFAULT_MAX_BODY_BYTES = 64 * 1024  # a full note is ~300 bytes; this leaves room for whitespace

RenderFn = Callable[[NoteParams, int], np.ndarray]

# The request body, described once for OpenAPI from the schema's own constants (validation itself
# is NoteParams', so the two cannot disagree about ranges).
NOTE_SCHEMA: dict[str, Any] = {
    "title": "Note",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "pitch": {
            "type": "integer",
            "minimum": PITCH_MIN,
            "maximum": PITCH_MAX,
            "default": DEFAULTS["pitch"],
            "description": "MIDI note number (integral floats such as 60.0 are accepted)",
        },
        "velocity": {
            "type": "integer",
            "minimum": VELOCITY_MIN,
            "maximum": VELOCITY_MAX,
            "default": DEFAULTS["velocity"],
            "description": f"MIDI velocity; the models were trained on {list(VELOCITY_LAYERS)}",
        },
        "source": {"type": "string", "enum": list(SOURCES), "default": DEFAULTS["source"]},
        "qualities": {
            "type": "array",
            "items": {"type": "string", "enum": list(QUALITIES)},
            "uniqueItems": True,
            "default": [],
            "description": "NSynth quality tags ('tempo-synced' is read as 'tempo_sync')",
        },
        "latent_sample": {
            "type": "array",
            "items": {"type": "number", "minimum": LATENT_MIN, "maximum": LATENT_MAX},
            "minItems": LATENT_DIM,
            "maxItems": LATENT_DIM,
            "default": [0.0] * LATENT_DIM,
            "description": f"{LATENT_DIM} timbre knobs in [{LATENT_MIN:g}, {LATENT_MAX:g}]",
        },
    },
    "example": {
        "velocity": 75,
        "pitch": 60,
        "source": "acoustic",
        "qualities": ["bright", "percussive"],
        "latent_sample": [0.0] * LATENT_DIM,
    },
}


class SoundResponse(BaseModel):
    """``POST /sound``'s answer: the note's samples at 16 kHz (64000 of them, 4 s)."""

    audio: list[float]


class ErrorResponse(BaseModel):
    """Every 4xx answer: a message naming the field and what it allows, and the field's name."""

    error: str
    field: str


_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)")


class BadRequest(Exception):
    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _field_of(message: str) -> str:
    """'latent_sample[3]: expected ...' -> 'latent_sample' (NoteParams' messages start so)."""
    m = _FIELD.match(message)
    return m.group(1) if m else "body"


async def _read_bounded(request: Request, max_bytes: int) -> bytes:
    """The body, refusing (413) anything over `max_bytes`, whether or not Content-Length says so."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, f"body: larger than {max_bytes} bytes", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"body: larger than {max_bytes} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


async def _note_from(request: Request, max_bytes: int) -> NoteParams:
    body = await _read_bounded(request, max_bytes)
    try:
        inputs = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, f"body: expected a JSON object with the note's fields ({exc})", "body")
    if not isinstance(inputs, dict):
        raise BadRequest(400, f"body: expected a JSON object with the note's fields, got {type(inputs).__name__}", "body")
    try:
        return NoteParams.from_dict(inputs)
    except ValueError as exc:
        raise BadRequest(422, str(exc), _field_of(str(exc)))


def _mono(audio: Any) -> np.ndarray:
    samples = np.asarray(audio, dtype=np.float32)
    return samples.reshape(-1) if samples.ndim != 1 else samples


def create_app(render: RenderFn, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The HTTP app around `render(params, sample_rate) -> audio` (blocking, cache-backed)."""
    app = FastAPI(
        title="sound-generator",
        version="0.1.0",
        description=(
            "The original sound generator's HTTP API: post a note, get 4 s of audio at 16 kHz. "
            "Notes are shared with the live OSC server's cache."
        ),
    )
    error_responses: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorResponse, "description": "body is not a JSON object"},
        413: {"model": ErrorResponse, "description": f"body larger than {max_body_bytes} bytes"},
        422: {"model": ErrorResponse, "description": "a field is out of range; `field` names it"},
    }
    request_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": NOTE_SCHEMA}}}}

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        log.info("HTTP %d: %s", exc.status, exc.message)
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status)

    async def _render(request: Request) -> tuple[NoteParams, np.ndarray]:
        params = await _note_from(request, max_body_bytes)
        audio = await run_in_threadpool(render, params, SAMPLE_RATE)
        return params, _mono(audio)

    @app.post(
        "/sound",
        response_model=SoundResponse,
        responses=error_responses,
        openapi_extra=request_body,
        summary="Render one note (the original API)",
    )
    async def sound(request: Request) -> Response:
        _, audio = await _render(request)
        # Built by hand: running 64000 floats through pydantic would only cost time.
        body = json.dumps({"audio": audio.tolist()}, separators=(",", ":"))
        return Response(body, media_type="application/json")

    @app.post(
        "/sound.wav",
        responses={200: {"content": {"audio/wav": {}}, "description": "16 kHz mono 16-bit PCM WAV"}, **error_responses},
        response_class=Response,
        openapi_extra=request_body,
        summary="Render one note as a WAV file",
    )
    async def sound_wav(request: Request) -> Response:
        params, audio = await _render(request)
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        name = f"note_{params.source}_{params.pitch:03d}_{params.velocity:03d}_{params.key[:8]}.wav"
        return Response(
            buffer.getvalue(),
            media_type="audio/wav",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/health", summary="Liveness check")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
