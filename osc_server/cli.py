"""`sound-generator serve`: the live OSC server (and optionally the HTTP API).

Listens on 127.0.0.1:9000 by default (another interface only with --host). See the README's
OSC table (`python -m osc_server.addresses --markdown`). Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import threading

log = logging.getLogger("osc_server")

# Tests set this (a zero-argument callable returning a generator) to serve without TensorFlow.
_generator_factory = None


def _device(text: str):
    return int(text) if text.strip().isdigit() else text


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=9000, help="OSC UDP port (default 9000; 0 picks a free one)")
    parser.add_argument("--device", type=_device, default=None,
                        help="output device: PortAudio index or a fragment of its name (default: the default output)")
    parser.add_argument("--sample-rate", type=int, default=48000, help="audio sample rate in Hz (default 48000)")
    parser.add_argument("--blocksize", type=int, default=256, help="audio block in frames (default 256)")
    parser.add_argument("--cache-mb", type=float, default=512, help="memory budget of the note cache (default 512)")
    parser.add_argument("--cache-dir", default=None, help="also keep rendered notes in this folder (warm restarts)")
    parser.add_argument("--cache-dir-mb", type=_positive_mb, default=2048,
                        help="size limit of --cache-dir in MB; the least recently used notes go first "
                             "(default 2048, about 2 800 notes at 48 kHz)")
    parser.add_argument("--voices", type=int, default=32, help="polyphony; the oldest voice is stolen beyond it")
    parser.add_argument("--render-workers", type=int, default=2, help="render threads (default 2)")
    parser.add_argument("--record", default=None, metavar="PATH",
                        help="do not use a sound card: write the stream to this WAV file")
    parser.add_argument("--no-jack-fallback", action="store_true",
                        help="without a sound card, do not start a JACK dummy server")
    parser.add_argument("--no-realtime", action="store_true",
                        help="do not ask for real-time priority for the audio callback and the OSC thread")
    parser.add_argument("--prerender", action="store_true",
                        help="pre-render the keyboard (21..108, five velocity layers) at start-up and "
                             "again half a second after each timbre change")
    parser.add_argument("--gain-db", type=_gain_db, default=0.0,
                        help="master gain at start in dB (-80..24, as /gain; default 0). The shipped "
                             "model's notes peak around -30 dBFS: +12 suits a few voices at once")
    parser.add_argument("--http-port", type=int, default=None, help="also serve the HTTP API on this port")
    parser.add_argument("--http-host", default="127.0.0.1", help="interface of the HTTP API (default 127.0.0.1)")
    parser.add_argument("--generator-factory", default=None, help=argparse.SUPPRESS)  # module:function, for tests


def _positive_mb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--cache-dir-mb: expected a positive number of MB, got {text!r}")
    return value


def _gain_db(text: str) -> float:
    from osc_server.addresses import GAIN_DB_MAX, GAIN_DB_MIN

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not GAIN_DB_MIN <= value <= GAIN_DB_MAX:
        raise argparse.ArgumentTypeError(f"--gain-db: expected a number of dB in [{GAIN_DB_MIN:g}, {GAIN_DB_MAX:g}], "
                                         f"got {text!r}")
    return value


def _load_generator(args):
    if args.generator_factory:
        module, _, name = args.generator_factory.partition(":")
        return getattr(importlib.import_module(module), name)()
    if _generator_factory is not None:
        return _generator_factory()
    from synth.generator import get_generator  # loads TensorFlow: only when serving for real

    return get_generator()


def _start_http(engine, host: str, port: int) -> threading.Thread:
    import uvicorn

    from osc_server.http_api import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(engine.render_blocking), host=host, port=port,
                                           log_level="info"))
    thread = threading.Thread(target=server.run, name="http", daemon=True)
    thread.start()
    log.info("HTTP API on http://%s:%d", host, port)
    return thread


def run(args) -> int:
    from osc_server.addresses import PRERENDER_HI, PRERENDER_LO
    from osc_server.server import LiveServer, ServerConfig, SetupError

    log.info("loading the generator")
    generator = _load_generator(args)
    config = ServerConfig(
        host=args.host, port=args.port, device=args.device, sample_rate=args.sample_rate,
        blocksize=args.blocksize, cache_mb=args.cache_mb, cache_dir=args.cache_dir,
        cache_dir_mb=args.cache_dir_mb, voices=args.voices,
        workers=args.render_workers, record=args.record, jack_fallback=not args.no_jack_fallback,
        realtime=not args.no_realtime,
    )
    try:
        server = LiveServer(generator, config)
    except SetupError as e:
        log.error("%s", e)
        return 2
    except OSError as e:  # the OSC port is taken, or the interface does not exist
        log.error("cannot listen on udp://%s:%d: %s", args.host, args.port, e)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.engine.set_gain_db(args.gain_db)
    server.start()
    if args.http_port is not None:
        _start_http(server.engine, args.http_host, args.http_port)
    if args.prerender:
        server.engine.auto_prerender = (PRERENDER_LO, PRERENDER_HI)
        server.engine.prerender(PRERENDER_LO, PRERENDER_HI,
                                lambda address, *a: log.info("%s %s", address, " ".join(map(str, a))))
    log.info("ready (model %s); Ctrl-C stops", getattr(generator, "model_version", "?"))
    while not stop.wait(5.0):
        pass
    log.info("stopping")
    server.close()
    return 0
