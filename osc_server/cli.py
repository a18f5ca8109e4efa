"""`sound-generator serve`: the live OSC server (and optionally the HTTP API).

Listens on 127.0.0.1:9000 by default (another interface only with --host, which warns unless
--allow names the networks served). See the README's OSC table (`python -m osc_server.addresses
--markdown`). Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import threading

log = logging.getLogger("osc_server")


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
    parser.add_argument("--voice-mode", choices=("live", "oneshot"), default="live",
                        help="live: a note sounds while its key is held, releases as its timbre does and follows "
                             "/bend, /pressure, /sustain, /mode and the timbre knobs (a voice process streams "
                             "them); oneshot: 4 s notes from the cache, as the seed played them "
                             "(default: %(default)s)")
    parser.add_argument("--live-voices", type=int, default=12,
                        help="with --voice-mode live: voices at most; the oldest is stolen past it (default "
                             "%(default)s: what the voice process keeps up with on a 2-core laptop, BENCHMARKS.md)")
    parser.add_argument("--render-workers", type=_workers, default=2,
                        help="render processes (default 2); each loads the generator, none shares the "
                             "audio callback's interpreter")
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
    parser.add_argument("--allow", type=_network, nargs="+", default=(), metavar="CIDR",
                        help="serve only senders in these networks (OSC and HTTP), e.g. 192.168.1.0/24 "
                             "10.0.0.5; others are dropped unanswered. Default: everyone who can reach "
                             "--host / --http-host")
    parser.add_argument("--presets-dir", default=None, metavar="DIR",
                        help="the user's presets for /preset/save, /preset/load, ... (default: the user data "
                             "folder, e.g. ~/.local/share/sound-generator/presets; created on the first save)")
    parser.add_argument("--generator-factory", default=None, help=argparse.SUPPRESS)  # module:function, for tests


def _workers(text: str) -> int:
    if not text.strip().isdigit() or not 1 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(f"--render-workers: expected an integer 1..16, got {text!r}")
    return int(text)


def _network(text: str):
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--allow: expected an IP network (CIDR such as 192.168.1.0/24) "
                                         f"or an address, got {text!r}") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: what it resolves to
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return False


EXPOSURE_WARNING = (
    "%s without --allow: anyone who can reach this machine on the network can play notes, change "
    "the timbre and gain, and fill the note cache (and the --cache-dir disk)%s. Pass --allow CIDR "
    "(e.g. --allow 192.168.1.0/24) to serve only those senders, or listen on 127.0.0.1")


def _warn_exposure(args) -> None:
    """A warning naming what is exposed when an interface other than loopback is open to all."""
    if getattr(args, "allow", ()):
        return
    http = getattr(args, "http_port", None) is not None
    exposed = [f"OSC on udp://{args.host}:{args.port}"] if not _is_loopback(args.host) else []
    if http and not _is_loopback(args.http_host):
        exposed.append(f"HTTP on http://{args.http_host}:{args.http_port}")
    if exposed:
        renders = ", and request renders over HTTP (each one costs a render)" if http else ""
        log.warning(EXPOSURE_WARNING, "listening for " + " and ".join(exposed), renders)


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
    """The render processes (`--render-workers` of them), each loading the generator once: this
    process, which runs the audio callback, never loads TensorFlow."""
    from osc_server.render_pool import DEFAULT_FACTORY, RenderPool

    return RenderPool(args.generator_factory or DEFAULT_FACTORY, args.render_workers)


def start_http(engine, host: str, port: int, allow=None, realtime: bool = False) -> threading.Thread:
    """Serve the HTTP API in a thread; ValueError naming --http-port if the port cannot be had.

    The socket is bound here, before uvicorn starts, so that a taken port is a start-up error
    rather than a log line from a thread that has already died. `allow`: client networks, or None.
    """
    import uvicorn

    from osc_server.audio import RT_PRIORITY_HELPERS, try_realtime
    from osc_server.http_api import create_app

    if not 0 <= port <= 65535:  # getaddrinfo would wrap 70000 round to 4464
        raise ValueError(f"--http-port: expected a TCP port 0..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT, not a live listener
            sock.bind(address)
            sock.listen(2048)  # uvicorn's default backlog
        except BaseException:
            sock.close()
            raise
    except (OSError, OverflowError) as e:  # taken, no such interface, port out of range
        raise ValueError(f"--http-port: cannot listen on http://{host}:{port}: {e}") from e
    port = sock.getsockname()[1]  # the real one when --http-port 0
    app = create_app(engine.render_blocking, allow=list(allow) if allow else None)  # () / None: everyone
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    def serve() -> None:
        # The event loop and the worker threads it starts (which inherit it) take the GIL that the
        # audio callback needs: real-time below it where allowed (audio.RT_PRIORITY_HELPERS).
        if realtime:
            try_realtime(RT_PRIORITY_HELPERS)
        server.run(sockets=[sock])

    thread = threading.Thread(target=serve, name="http", daemon=True)
    thread.start()
    log.info("HTTP API on http://%s:%d", host, port)
    return thread


def run(args) -> int:
    from osc_server.logs import install_nonblocking_logging

    # Log lines go through a bounded queue to a writer thread: a stderr nobody reads (a full pipe)
    # cannot stall the OSC, render or audio threads; repeated lines are rate-limited.
    logs = install_nonblocking_logging()
    try:
        _warn_exposure(args)
        return _serve(args)
    finally:
        logs.stop()


def _serve(args) -> int:
    from osc_server.addresses import PRERENDER_HI, PRERENDER_LO
    from osc_server.server import LiveServer, ServerConfig, SetupError

    log.info("starting %d render processes (loading the generator)", args.render_workers)
    try:
        generator = _load_generator(args)
    except (RuntimeError, ValueError, ImportError, AttributeError) as e:
        option = "--generator-factory: " if args.generator_factory else ""
        log.error("%scannot start the render processes: %s", option, e)
        return 2
    config = ServerConfig(
        host=args.host, port=args.port, device=args.device, sample_rate=args.sample_rate,
        blocksize=args.blocksize, cache_mb=args.cache_mb, cache_dir=args.cache_dir,
        cache_dir_mb=args.cache_dir_mb, voices=args.voices,
        workers=args.render_workers, record=args.record, jack_fallback=not args.no_jack_fallback,
        realtime=not args.no_realtime, allow=tuple(args.allow), presets_dir=args.presets_dir,
        voice_mode=args.voice_mode, voice_factory=args.generator_factory, live_voices=args.live_voices,
    )
    try:
        server = LiveServer(generator, config)
    except SetupError as e:
        generator.close()
        log.error("%s", e)
        return 2
    except BaseException:
        generator.close()
        raise
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.engine.set_gain_db(args.gain_db)
    server.start()
    if args.http_port is not None:
        try:
            start_http(server.engine, args.http_host, args.http_port, allow=args.allow,
                       realtime=not args.no_realtime)
        except ValueError as e:  # the HTTP port is taken: a start-up error, like a taken OSC port
            log.error("%s", e)
            server.close()
            generator.close()
            return 2
    if args.prerender:
        server.engine.auto_prerender = (PRERENDER_LO, PRERENDER_HI)
        server.engine.request_prerender(PRERENDER_LO, PRERENDER_HI,
                                        lambda address, *a: log.info("%s %s", address, " ".join(map(str, a))))
    log.info("ready (model %s); Ctrl-C stops", getattr(generator, "model_version", "?"))
    while not stop.wait(5.0):
        pass
    log.info("stopping")
    server.close()
    generator.close()
    return 0
