"""The original system's HTTP API, on FastAPI: ``POST /sound`` and a WAV download of the same note.

    POST /sound       JSON note (the seed README's dict)  -> {"audio": [64000 floats]} (16 kHz, 4 s)
    POST /sound.wav   the same JSON body                  -> audio/wav, 16 kHz mono 16-bit PCM
    GET  /health                                          -> {"status": "ok"}
    GET  /openapi.json, /docs                             -> the OpenAPI description (FastAPI's)

The body is validated by `synth.params.NoteParams.from_dict`, the one place that knows the note
schema; missing keys take its defaults. Every error is JSON that names the field (or `body`,
`client`, `server`); bad input never gets a 500::

    403 {"error": "client: 10.0.0.7 is not in --allow (127.0.0.0/8)", "field": "client"}
    413 {"error": "body: larger than 65536 bytes", "field": "body"}       (bounded before parsing)
    422 {"error": "pitch: expected an integer 9..120, got 200", "field": "pitch"}
        {"error": "pitch: expected a finite number of at most 20 digits, got an integer of 400 digits", ...}
    400 {"error": "body: expected a JSON object ...", "field": "body"}     (not JSON / not an object /
                                                                           nested deeper than 32 levels)
    503 {"error": "server: busy ...", "field": "server"} + Retry-After   (render queue full)
    504 {"error": "render: timed out ...", "field": "server"}           (render raised TimeoutError)
    500 {"error": "render failed: ...", "field": "server"}              (a server fault, not the input)

`render(params, sample_rate)` is injected: the live server passes its engine's cache-backed
blocking render, so a note fetched over HTTP is the same cache entry a performer plays over OSC.
It runs in a worker thread, never on the event loop; at most `max_rendering` renders run at once
and `max_waiting` more wait, beyond which requests get 503 at once. The app runs on one event loop
(uvicorn's; use `with TestClient(app)` in tests that overlap requests).

The audio process must not stall: its sound-card callback needs the GIL every few milliseconds.
`json.dumps` of 64000 floats holds the GIL ~40 ms, so `POST /sound` encodes in separate processes
(`python -c` children that import only numpy, started on first use, shut down with the app); this
process only writes the float32 samples into a pipe and reads the JSON bytes back, with the GIL
released. The WAV is written in place (`soundfile`, under 1 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import math
import re
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from osc_server.access import address_allowed
from osc_server.access import networks as access_networks
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
from synth.units import SAMPLE_RATE  # the original API's rate: 64000 samples = 4 s

log = logging.getLogger("osc_server.http")

DEFAULT_MAX_BODY_BYTES = 64 * 1024  # a full note is ~300 bytes; this leaves room for whitespace
DEFAULT_MAX_RENDERING = 2  # renders at once (the engine has a couple of render workers)
DEFAULT_MAX_WAITING = 8  # requests waiting for a render slot; more get 503 + Retry-After
MAX_DEPTH = 32  # JSON nesting levels (a note needs 2); deeper bodies get 400 before parsing
MAX_NUMBER_DIGITS = 20  # integers longer than this are refused before int() sees them

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
    """Every error answer: a message naming the field and what it allows, and the field's name
    (`body`, `client` or `server` when no single field is at fault)."""

    error: str
    field: str


_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)")


class BadRequest(Exception):
    """An answer other than 200: `status`, a message naming `field`, and optional headers.

    Despite the name it also carries the server's own 5xx answers (busy, timed out, failed)."""

    def __init__(self, status: int, message: str, field: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
        self.headers = headers or {}


def _field_of(message: str) -> str:
    """'latent_sample[3]: expected ...' -> 'latent_sample' (NoteParams' messages start so)."""
    m = _FIELD.match(message)
    return m.group(1) if m else "body"


async def _read_bounded(request: Request, max_bytes: int) -> bytes:
    """The body, refusing (413) anything over `max_bytes`, whether or not Content-Length says so."""
    declared = (request.headers.get("content-length") or "").strip()
    # Thousands of digits, or digits int() cannot read ('²'), must not reach int(): a 413 too.
    if declared.isdigit() and (len(declared) > 18 or not declared.isascii() or int(declared) > max_bytes):
        raise BadRequest(413, f"body: larger than {max_bytes} bytes", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"body: larger than {max_bytes} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_depth(body: bytes) -> int:
    """How deep `body`'s arrays and objects nest, brackets inside strings not counted; checked
    before json.loads, which would raise RecursionError far below 64 KB.

    Linear and vectorised (a regex for strings goes quadratic on an unclosed string of \\"s). A
    quote is escaped after an odd run of backslashes. Exact for valid JSON; for invalid JSON never
    less than the depth the parser reaches before its error (it stops at the first backslash
    outside a string, and up to there the two readings agree)."""
    chars = np.frombuffer(body, dtype=np.uint8)
    if chars.size == 0:
        return 0
    index = np.arange(chars.size)
    backslash = chars == ord("\\")
    last_other = np.maximum.accumulate(np.where(backslash, -1, index))  # last non-backslash at or before i
    run_before = np.empty(chars.size, dtype=np.int64)  # backslashes just before i
    run_before[0] = 0
    run_before[1:] = index[:-1] - last_other[:-1]
    quote = (chars == ord('"')) & (run_before % 2 == 0)
    outside = np.cumsum(quote) % 2 == 0  # for a bracket (not a quote): no string open before it
    opens = ((chars == ord("[")) | (chars == ord("{"))) & outside
    closes = ((chars == ord("]")) | (chars == ord("}"))) & outside
    return int(max(0, np.cumsum(opens.astype(np.int64) - closes).max()))


class _BadNumber:
    """Stands in, after parsing, for a number NoteParams must never see (see `_parse_json`)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return self.what


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _parse_json(body: bytes) -> tuple[Any, bool]:
    """json.loads, with integers of more than MAX_NUMBER_DIGITS digits (int() of thousands of
    digits raises, and huge ones overflow float()) and non-finite numbers (NaN, Infinity, 1e400)
    replaced by `_BadNumber`s; the flag says whether there were any."""
    bad = False

    def parse_int(text: str) -> Any:
        nonlocal bad
        digits = len(text) - text.startswith("-")
        if digits > MAX_NUMBER_DIGITS:
            bad = True
            return _BadNumber(f"an integer of {digits} digits")
        return int(text)

    def parse_float(text: str) -> Any:
        nonlocal bad
        value = float(text)
        if not math.isfinite(value):
            bad = True
            return _BadNumber(f"{_short(text)}, which is not a finite double")
        return value

    def parse_constant(text: str) -> Any:
        nonlocal bad
        bad = True
        return _BadNumber(text)

    value = json.loads(body, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    return value, bad


def _first_bad_number(value: Any, path: str) -> tuple[str, _BadNumber] | None:
    if isinstance(value, _BadNumber):
        return path, value
    items: Iterable[tuple[str, Any]] = ()
    if isinstance(value, dict):
        items = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    for sub_path, sub in items:
        found = _first_bad_number(sub, sub_path)
        if found:
            return found
    return None


async def _note_from(request: Request, max_bytes: int) -> NoteParams:
    body = await _read_bounded(request, max_bytes)
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _json_depth(body) > MAX_DEPTH:
        raise BadRequest(400, f"body: nested deeper than {MAX_DEPTH} levels; a note is a JSON object of "
                              "numbers, strings and flat lists", "body")
    try:
        inputs, bad_numbers = _parse_json(body)
    except RecursionError:  # not reached after the depth check; kept so that it can never be a 500
        raise BadRequest(400, f"body: nested deeper than {MAX_DEPTH} levels", "body")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(400, f"body: expected a JSON object with the note's fields ({_short(str(exc), 200)})", "body")
    if not isinstance(inputs, dict):
        raise BadRequest(400, f"body: expected a JSON object with the note's fields, got {type(inputs).__name__}", "body")
    if bad_numbers:
        for key, value in inputs.items():
            found = _first_bad_number(value, key)
            if found:
                path, number = found
                raise BadRequest(422, f"{path}: expected a finite number of at most {MAX_NUMBER_DIGITS} digits,"
                                      f" got {number.what}", key)
    try:
        return NoteParams.from_dict(inputs)
    except ValueError as exc:
        raise BadRequest(422, str(exc), _field_of(str(exc)))
    except (TypeError, ArithmeticError) as exc:  # NoteParams raises ValueError; never let input cause a 500
        raise BadRequest(422, f"body: not a valid note ({type(exc).__name__}: {_short(str(exc), 200)})", "body")


def _mono(audio: Any) -> np.ndarray:
    samples = np.asarray(audio, dtype=np.float32)
    return samples.reshape(-1) if samples.ndim != 1 else samples


# The encoder process's whole program: length-prefixed float32 in, length-prefixed JSON out, the
# JSON being what the original API wrote (`json.dumps` of `audio.tolist()`: each float32 sample as
# the double it is), which holds a GIL ~40 ms for 64000 samples: never in the audio process.
# A `python -c` child rather than multiprocessing's spawn: it imports only numpy (no fastapi, and
# not the parent's __main__ again), and it exits by itself when the parent's end of stdin closes.
_ENCODER_SOURCE = r"""
import json, os, struct, sys
import numpy as np
if hasattr(os, "sched_setscheduler"):  # started from a real-time HTTP thread: not inherited
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
os.nice(10)  # below the audio process's threads on a busy machine
src, dst = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = src.read(8)
    if len(head) < 8:
        break
    (size,) = struct.unpack("<Q", head)
    audio = np.frombuffer(src.read(size), dtype="<f4")
    body = json.dumps({"audio": audio.tolist()}, separators=(",", ":")).encode()
    dst.write(struct.pack("<Q", len(body)))
    dst.write(body)
    dst.flush()
"""


class _EncoderProcess:
    """One encoder child. `encode` blocks (pipe I/O, which releases the GIL): call it from a thread."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ENCODER_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C on the terminal is the server's to handle, not the child's
        )

    def encode(self, audio: np.ndarray) -> bytes:
        data = np.ascontiguousarray(audio, dtype="<f4")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(struct.pack("<Q", data.nbytes))
        self.proc.stdin.write(memoryview(data).cast("B"))
        self.proc.stdin.flush()
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise BrokenPipeError(f"the JSON encoder process exited (code {self.proc.poll()})")
        (size,) = struct.unpack("<Q", head)
        body = self.proc.stdout.read(size)
        if len(body) < size:
            raise BrokenPipeError(f"the JSON encoder process exited (code {self.proc.poll()})")
        return body

    def close(self, wait: bool = True) -> None:
        """Close the pipes (the child exits at end of input); with `wait`, reap it (kill after 2 s)."""
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        if not wait:
            return  # subprocess reaps it later
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _close_without_waiting(workers: list[_EncoderProcess]) -> None:
    for worker in list(workers):
        worker.close(wait=False)


class _AudioEncoder:
    """Up to `workers` encoder processes, started on first use, shut down with the app.

    The audio callback shares this interpreter: `json.dumps` of 64000 floats here would hold the GIL
    ~40 ms (an under-run each time). Here this process only copies the 256 KB of samples into a
    pipe and reads the JSON back, both with the GIL released."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._idle: list[_EncoderProcess] = []
        self._all: list[_EncoderProcess] = []
        self._free = threading.Condition()
        self._closed = False
        # An app dropped without its shutdown (a TestClient outside `with`): its children go with it.
        weakref.finalize(self, _close_without_waiting, self._all)

    def _take(self) -> _EncoderProcess:
        with self._free:
            while not self._idle and len(self._all) >= self.workers and not self._closed:
                self._free.wait()
            if self._closed:
                raise BrokenPipeError("the JSON encoder is shut down")
            if self._idle:
                return self._idle.pop()
            worker = _EncoderProcess()
            self._all.append(worker)
            return worker

    def _give_back(self, worker: _EncoderProcess, healthy: bool) -> None:
        with self._free:
            if healthy and not self._closed:
                self._idle.append(worker)
            else:
                self._all.remove(worker)
            self._free.notify()
        if not healthy or self._closed:
            worker.close()

    def encode_blocking(self, audio: np.ndarray) -> bytes:
        for attempt in range(2):  # a worker that died (killed?) is replaced once
            worker = self._take()
            try:
                body = worker.encode(audio)
            except OSError:
                self._give_back(worker, healthy=False)
                log.warning("the HTTP JSON encoder process died; %s", "giving up" if attempt else "starting another")
                if attempt:
                    raise
                continue
            self._give_back(worker, healthy=True)
            return body
        raise AssertionError("unreachable")

    async def encode(self, audio: np.ndarray) -> bytes:
        return await run_in_threadpool(self.encode_blocking, audio)

    def shutdown(self) -> None:
        with self._free:
            self._closed = True
            idle, self._idle = self._idle, []
            for worker in idle:
                self._all.remove(worker)
            self._free.notify_all()
        for worker in idle:
            worker.close()


class _RenderQueue:
    """At most `rendering` renders at once and `waiting` more in line; beyond that, 503.

    Lives on the app's one event loop (no locks needed). Retry-After is the recent time per
    request times the queue ahead, in whole seconds, 1..60."""

    def __init__(self, rendering: int, waiting: int) -> None:
        if rendering < 1 or waiting < 0:
            raise ValueError(f"max_rendering: expected >= 1 (got {rendering}); "
                             f"max_waiting: expected >= 0 (got {waiting})")
        self.rendering, self.waiting = rendering, waiting
        self.admitted = 0  # rendering + waiting
        self.seconds_per_request = 1.0  # running mean; a guess until the first request finishes
        self._slots = asyncio.Semaphore(rendering)

    def retry_after(self) -> int:
        return int(min(60, max(1, math.ceil(self.seconds_per_request * self.admitted / self.rendering))))

    @contextlib.asynccontextmanager
    async def slot(self):
        if self.admitted >= self.rendering + self.waiting:
            seconds = self.retry_after()
            raise BadRequest(
                503,
                f"server: busy ({self.rendering} notes rendering and {self.waiting} waiting); "
                f"retry in {seconds} s",
                "server",
                headers={"Retry-After": str(seconds)},
            )
        self.admitted += 1
        try:
            async with self._slots:
                started = time.monotonic()
                yield
                self.seconds_per_request += 0.3 * (time.monotonic() - started - self.seconds_per_request)
        finally:
            self.admitted -= 1


class _AllowClients:
    """Plain ASGI middleware: 403 for HTTP clients outside `allow` (every route, /docs too)."""

    def __init__(self, app: Any, allow: list[Any]) -> None:
        self.app, self.allow = app, allow

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = (scope.get("client") or (None, None))[0]
            if not address_allowed(host, self.allow):
                networks = ", ".join(map(str, self.allow)) or "nothing"
                log.info("HTTP 403: %s is not in --allow", host)
                response = JSONResponse({"error": f"client: {host} is not in --allow ({networks})", "field": "client"},
                                        status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    render: RenderFn,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    *,
    max_rendering: int = DEFAULT_MAX_RENDERING,
    max_waiting: int = DEFAULT_MAX_WAITING,
    allow: Sequence[Any] | None = None,
) -> FastAPI:
    """The HTTP app around `render(params, sample_rate) -> audio` (blocking, cache-backed).

    `render` may raise TimeoutError (-> 504); anything else it raises is a 500. At most
    `max_rendering` renders run at once and `max_waiting` requests wait; more get 503 with
    Retry-After. `allow`: the client networks (`ipaddress.ip_network`s, or strings) that may
    connect; None lets everyone in, others get 403.
    """
    queue = _RenderQueue(max_rendering, max_waiting)
    networks = None if allow is None else list(access_networks(allow))

    # The encoder is reached through app.state, not a closure: FastAPI keeps endpoint functions in
    # caches of its own, and an app dropped without its shutdown must let its children go (GC).
    @contextlib.asynccontextmanager
    async def lifespan(app_: FastAPI):
        try:
            yield
        finally:
            app_.state.encoder.shutdown()

    app = FastAPI(
        title="sound-generator",
        version="0.1.0",
        description=(
            "The original sound generator's HTTP API: post a note, get 4 s of audio at 16 kHz. "
            "Notes are shared with the live OSC server's cache."
        ),
        lifespan=lifespan,
    )
    app.state.render_queue, app.state.encoder = queue, _AudioEncoder(workers=max_rendering)
    if networks is not None:
        app.add_middleware(_AllowClients, allow=networks)
    error_responses: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorResponse, "description": "body is not a JSON object, or nested too deep"},
        403: {"model": ErrorResponse, "description": "the client's address is not in --allow"},
        413: {"model": ErrorResponse, "description": f"body larger than {max_body_bytes} bytes"},
        422: {"model": ErrorResponse, "description": "a field is out of range; `field` names it"},
        500: {"model": ErrorResponse, "description": "the render failed (a server fault)"},
        503: {"model": ErrorResponse, "description": "too many notes rendering and waiting; see Retry-After"},
        504: {"model": ErrorResponse, "description": "the render timed out"},
    }
    request_body = {"requestBody": {"required": True, "content": {"application/json": {"schema": NOTE_SCHEMA}}}}

    @app.exception_handler(BadRequest)
    async def _bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        log.log(logging.WARNING if exc.status >= 500 else logging.INFO, "HTTP %d: %s", exc.status, exc.message)
        return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _server_fault(_: Request, exc: Exception) -> JSONResponse:  # a bug: still JSON
        return JSONResponse({"error": f"server: internal error ({type(exc).__name__})", "field": "server"},
                            status_code=500)

    async def _render_in_thread(params: NoteParams) -> np.ndarray:
        try:
            return _mono(await run_in_threadpool(render, params, SAMPLE_RATE))
        except TimeoutError as exc:
            raise BadRequest(504, f"render: timed out ({str(exc) or 'no detail'})", "server")
        except Exception as exc:
            log.exception("HTTP render of %s failed", params)
            raise BadRequest(500, f"render failed: {type(exc).__name__}: {_short(str(exc), 200)}", "server")

    @app.post(
        "/sound",
        response_model=SoundResponse,
        responses=error_responses,
        openapi_extra=request_body,
        summary="Render one note (the original API)",
    )
    async def sound(request: Request) -> Response:
        params = await _note_from(request, max_body_bytes)
        async with queue.slot():
            audio = await _render_in_thread(params)
            # Built by hand, not by pydantic, and in the encoder process: see the module docstring.
            try:
                body = await request.app.state.encoder.encode(audio)
            except OSError as exc:
                raise BadRequest(500, f"server: the JSON encoder process failed ({exc})", "server")
        return Response(body, media_type="application/json")

    @app.post(
        "/sound.wav",
        responses={200: {"content": {"audio/wav": {}}, "description": "16 kHz mono 16-bit PCM WAV"}, **error_responses},
        response_class=Response,
        openapi_extra=request_body,
        summary="Render one note as a WAV file",
    )
    async def sound_wav(request: Request) -> Response:
        params = await _note_from(request, max_body_bytes)
        async with queue.slot():
            audio = await _render_in_thread(params)
        # Written in place: soundfile's C writer takes under 1 ms for 4 s at 16 kHz.
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
