"""Run the real Pure Data headless on the shipped patch, and free UDP ports for it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PATCHES = REPO / "patches"
MAIN_PATCH = PATCHES / "sound_generator.pd"
# What Pd prints when a patch does not load cleanly.
PD_ERROR_WORDS = ("error", "couldn't create", "failed", "bad arguments", "no method", "can't")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pd_errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(w in line.lower() for w in PD_ERROR_WORDS)]


class Pd:
    """`pd -nogui -nosound -nomidi -stderr -open PATCH [-open ...] -send ...` with its stderr
    collected line by line, so a test can wait for what the patch prints."""

    def __init__(self, *opens: Path, sends: list[str] = ()) -> None:
        assert shutil.which("pd"), "Pure Data is not installed (Debian: puredata-core)"
        cmd = ["pd", "-nogui", "-nosound", "-nomidi", "-stderr"]
        for path in opens:
            cmd += ["-open", str(path)]
        for message in sends:
            cmd += ["-send", message]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=PATCHES)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or self._reader.is_alive(), f"pd exited:\n{self.output}"
            assert time.monotonic() < deadline, f"pd never printed {text!r}:\n{self.output}"
            time.sleep(0.02)

    def wait_exit(self, timeout: float = 15.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.wait_exit()
        return self.output
