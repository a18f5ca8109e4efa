"""Rendered notes: an LRU cache under a memory budget, optionally persisted on disk.

Keys are strings built by `note_key(params, sample_rate, model_version)`: `NoteParams.key` plus
the sample rate and the model version, so a new model or another sound-card rate never plays a
stale note. With a `cache_dir`, every stored note is also written there (to a temporary file,
then renamed: atomic), and a memory miss looks on disk before it counts as a miss, so a restart
is warm. A file that is truncated, corrupt or written for another key/model/rate is ignored
(and replaced when the note is rendered again). The folder is kept under its own budget
(`disk_budget_bytes`): past it, the least recently used files go (written or read counts as
used; a restart orders the files it finds by their modification time).

Thread-safe; used by the receiving thread and the render workers, never by the audio callback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from synth.params import NoteParams

log = logging.getLogger("osc_server.cache")

MAGIC = b"SGNOTE1\n"


def note_key(params: NoteParams, sample_rate: int, model_version: str) -> str:
    return f"{params.key}-{int(sample_rate)}-{model_version}"


class NoteCache:
    def __init__(self, budget_bytes: int, cache_dir: str | os.PathLike | None = None,
                 disk_budget_bytes: int | None = None):
        self.budget_bytes = int(budget_bytes)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.disk_budget_bytes = None if disk_budget_bytes is None else int(disk_budget_bytes)
        self._notes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # The folder's files, least recently used first: name -> size in bytes.
        self._files: OrderedDict[str, int] = OrderedDict()
        self._disk_bytes = 0
        self._disk_lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0
        self.evictions = 0
        self.disk_evictions = 0
        self.ignored_files = 0
        if self.cache_dir:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            found = []
            for path in self.cache_dir.glob("*.note"):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                found.append((st.st_mtime, path.name, st.st_size))
            for _, name, size in sorted(found):
                self._files[name] = size
                self._disk_bytes += size
            with self._disk_lock:
                self._trim_disk()

    # -- memory ---------------------------------------------------------------------------
    def get(self, key: str, count: bool = True) -> np.ndarray | None:
        with self._lock:
            audio = self._notes.get(key)
            if audio is not None:
                self._notes.move_to_end(key)
                if count:
                    self.hits += 1
                return audio
        audio = self._load(key) if self.cache_dir else None
        if audio is not None:
            self._put_memory(key, audio)
            with self._lock:
                if count:
                    self.hits += 1
                    self.disk_hits += 1
            return audio
        if count:
            with self._lock:
                self.misses += 1
        return None

    def contains(self, key: str) -> bool:
        with self._lock:
            if key in self._notes:
                return True
        return bool(self.cache_dir) and self._path(key).exists()

    def put(self, key: str, audio: np.ndarray) -> np.ndarray:
        """Store a note (made read-only float32); returns the stored array."""
        audio = np.ascontiguousarray(audio, dtype=np.float32).copy()
        audio.setflags(write=False)
        self._put_memory(key, audio)
        if self.cache_dir:
            self._save(key, audio)
        return audio

    def _put_memory(self, key: str, audio: np.ndarray) -> None:
        with self._lock:
            old = self._notes.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._notes[key] = audio
            self._bytes += audio.nbytes
            while self._bytes > self.budget_bytes and len(self._notes) > 1:
                _, evicted = self._notes.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    def clear_memory(self) -> None:
        with self._lock:
            self._notes.clear()
            self._bytes = 0

    @property
    def n_notes(self) -> int:
        return len(self._notes)

    @property
    def n_bytes(self) -> int:
        return self._bytes

    @property
    def disk_bytes(self) -> int:
        """Bytes of note files in cache_dir (0 without one)."""
        return self._disk_bytes

    # -- disk -----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.cache_dir / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".note")

    def _save(self, key: str, audio: np.ndarray) -> None:
        payload = audio.astype("<f4").tobytes()
        header = json.dumps({"key": key, "n": int(audio.size), "crc32": zlib.crc32(payload)}).encode()
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + header + b"\n" + payload)
        os.replace(tmp, path)
        self._used(path.name, len(MAGIC) + len(header) + 1 + len(payload))

    def _used(self, name: str, size: int) -> None:
        """Record a write or read of a cache file (most recently used now) and keep the budget."""
        with self._disk_lock:
            self._disk_bytes += size - self._files.pop(name, 0)
            self._files[name] = size
            self._trim_disk()

    def _trim_disk(self) -> None:
        """Delete least recently used files past disk_budget_bytes (the newest always stays)."""
        if self.disk_budget_bytes is None:
            return
        while self._disk_bytes > self.disk_budget_bytes and len(self._files) > 1:
            name, size = self._files.popitem(last=False)
            self._disk_bytes -= size
            self.disk_evictions += 1
            try:
                (self.cache_dir / name).unlink()
            except FileNotFoundError:
                pass

    def _load(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        reason = None
        if not blob.startswith(MAGIC) or b"\n" not in blob[len(MAGIC):]:
            reason = "not a note file"
        else:
            header_bytes, payload = blob[len(MAGIC):].split(b"\n", 1)
            try:
                header = json.loads(header_bytes)
            except ValueError:
                header = None
            if not isinstance(header, dict):
                reason = "unreadable header"
            elif header.get("key") != key:
                reason = "written for another note/model/rate"
            elif header.get("n") != len(payload) // 4 or len(payload) % 4:
                reason = "truncated"
            elif header.get("crc32") != zlib.crc32(payload):
                reason = "checksum mismatch"
        if reason:
            self.ignored_files += 1
            log.warning("ignoring cache file %s (%s); the note will be rendered again", path, reason)
            return None
        audio = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        audio.setflags(write=False)
        try:
            os.utime(path)  # used now: a restart orders the files by this
        except FileNotFoundError:
            pass
        self._used(path.name, len(blob))
        return audio
