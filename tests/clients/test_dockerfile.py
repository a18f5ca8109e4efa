"""The Dockerfile, read as text (no Docker engine on the build machine, so it is never built in
the tests): its CMD parses with the real `serve` options, it copies every package the wheel
includes plus the weights, .dockerignore does not hide any of them, and it exposes the ports the
CMD serves."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

from synth.cli import build_parser

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text()
    lines = [l for l in text.splitlines() if not l.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1]) for l in joined.splitlines() if l.strip()]


def ignored(path: str) -> bool:
    patterns = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    parts = Path(path).parts
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(parts[0], p) for p in patterns)


def test_base_image_system_packages_and_ports() -> None:
    ins = instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    run = " ".join(arg for op, arg in ins if op == "RUN")
    for package in ("libportaudio2", "jackd2", "libsndfile1"):
        assert re.search(rf"apt-get install [^&]*\b{package}\b", run), package
    assert "jackd/tweak_rt_limits boolean false" in run  # else debconf stops the build to ask
    exposed = {p for op, arg in ins if op == "EXPOSE" for p in arg.split()}
    assert exposed == {"80", "9000/udp"}


def test_cmd_is_a_valid_serve_command_on_the_exposed_ports() -> None:
    cmd = json.loads(next(arg for op, arg in instructions() if op == "CMD"))
    assert cmd[:2] == ["sound-generator", "serve"]
    args = build_parser(load="serve").parse_args(cmd[1:])
    assert (args.host, args.port) == ("0.0.0.0", 9000)
    assert (args.http_host, args.http_port) == ("0.0.0.0", 80)


def test_every_package_and_the_weights_are_copied_and_not_ignored() -> None:
    copied = set()
    for op, arg in instructions():
        if op == "COPY":
            *sources, _ = arg.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                assert not ignored(source), f"COPY {source}: excluded by .dockerignore"
                copied.add(source)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"checkpoints", "pyproject.toml", "README.md"} <= copied
    run = " ".join(arg for op, arg in instructions() if op == "RUN")
    assert "pip install --no-deps -e ." in run  # editable: the generator finds checkpoints/ beside synth/
    assert "get_generator()" in run  # the build loads the weights once


def test_the_healthcheck_url_exists() -> None:
    from osc_server.http_api import create_app

    health = next(arg for op, arg in instructions() if op == "HEALTHCHECK")
    path = re.search(r"http://127\.0\.0\.1(/\w+)", health).group(1)
    assert path in {route.path for route in create_app(lambda p, sr: None).routes}
