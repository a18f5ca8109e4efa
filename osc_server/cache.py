"""Rendered notes: an LRU cache under a memory budget, optionally persisted on disk.

Keys are strings built by `note_key(params, sample_rate, model_version)`: `NoteParams.key` plus
the sample rate and the model version, so a new model or another sound-card rate never plays a
stale note. With a `cache_dir`, every stored note is also written there (to a temporary file,
then renamed: atomic), and a memory miss looks on disk before it counts as a miss, so a restart
is warm. A file that is truncated, corrupt or written for another key/model/rate is ignored
(and replaced when the note is rendered again). The folder is kept under its own budget
(`disk_budget_bytes`): past it, the least recently used files go (written or read counts as
used; a restart orders the files it finds by their modification time).

The disk never makes the cache fail: a note is always stored in memory first. If the folder
becomes unusable (full, read-only, over quota, no permission, I/O errors, vanished), the disk
cache is switched off for the rest of the run with one warning (`disk_enabled`, `disk_error`); a
problem with one note's file (say a folder where the file should be) skips the disk for that note
only. Temporary files left by a crashed process are removed at start (counted in the disk budget
while they cannot be). A `cache_dir` that is not a folder, or cannot be created or listed, is a
`CacheDirError` at construction.

Thread-safe; used by the receiving thread and the render workers, never by the audio callback.
"""

from __future__ import annotations

import errno
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

# Errors that mean the whole folder is unusable (not just one note's file): the disk cache is
# switched off for the rest of the run. ENOENT/ENOTDIR count too when the folder itself is gone.
FOLDER_ERRNOS = frozenset(e for e in (errno.ENOSPC, errno.EROFS, getattr(errno, "EDQUOT", None), errno.EACCES,
                                      errno.EPERM, errno.EIO) if e is not None)


class CacheDirError(ValueError):
    """`cache_dir` cannot be used (not a folder, cannot be created or listed); the message starts
    with "cache_dir: " and says what is wrong."""


def _describe(e: OSError) -> str:
    """'No space left on device (ENOSPC)', or the exception's text when it has no errno."""
    if e.errno in errno.errorcode:
        return f"{e.strerror or os.strerror(e.errno)} ({errno.errorcode[e.errno]})"
    return str(e) or type(e).__name__


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
        self.disk_errors = 0  # OSErrors met on the disk (each logged once per note, or once in all)
        # False without a cache_dir, or once the folder proved unusable (disk_error says why).
        self.disk_enabled = self.cache_dir is not None
        self.disk_error: str | None = None
        self._off_lock = threading.Lock()
        self._bad_keys: set[str] = set()  # notes whose file cannot be used: memory only this run
        if self.cache_dir:
            self._open_dir()

    def _open_dir(self) -> None:
        folder = self.cache_dir
        try:
            if folder.exists() and not folder.is_dir():
                kind = "a file" if folder.is_file() else "something else"
                raise CacheDirError(f"cache_dir: {folder} is {kind}, not a folder")
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            try:
                blocker = next((p for p in folder.parents if p.exists()), None)
                if blocker is not None and not blocker.is_dir():
                    raise CacheDirError(f"cache_dir: cannot create {folder}: {blocker} is a file, not a folder"
                                        ) from None
            except OSError:
                pass
            raise CacheDirError(f"cache_dir: cannot create {folder}: {_describe(e)}") from None
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            raise CacheDirError(f"cache_dir: cannot list {folder}: {_describe(e)}") from None
        found, leftovers = [], []
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    leftovers.append((entry.name, entry.stat(follow_symlinks=False).st_size))
                elif entry.name.endswith(".note"):
                    st = entry.stat(follow_symlinks=False)
                    found.append((st.st_mtime, entry.name, st.st_size))
            except OSError:
                continue
        # Temporary files of a process that died mid-write: removed; any that cannot be stay
        # counted (first in line for the budget's trimming, which tries again).
        removed, stuck = 0, []
        for name, size in leftovers:
            try:
                os.unlink(folder / name)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as e:
                stuck.append((name, size))
                self.disk_errors += 1
                log.warning("cannot remove leftover temporary file %s (%s); it is counted in the disk budget",
                            folder / name, _describe(e))
        if removed:
            log.info("removed %d leftover temporary file(s) from %s", removed, folder)
        for name, size in stuck + [(name, size) for _, name, size in sorted(found)]:
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
        audio = self._load(key) if self._disk_usable(key) else None
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
        if not self._disk_usable(key):
            return False
        try:
            return self._path(key).is_file()
        except OSError:
            return False

    def put(self, key: str, audio: np.ndarray) -> np.ndarray:
        """Store a note (made read-only float32); returns the stored array. Never raises because
        of the disk: the note is in memory whatever happens to its file."""
        audio = np.ascontiguousarray(audio, dtype=np.float32).copy()
        audio.setflags(write=False)
        self._put_memory(key, audio)
        if self._disk_usable(key):
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

    def _disk_usable(self, key: str) -> bool:
        return self.disk_enabled and key not in self._bad_keys

    def _folder_failed(self, e: OSError) -> bool:
        """Whether `e` means the whole folder is unusable."""
        if e.errno in FOLDER_ERRNOS:
            return True
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            try:
                return not self.cache_dir.is_dir()  # the folder itself vanished
            except OSError:
                return True
        return False

    def _switch_off(self, e: OSError) -> None:
        """The folder is unusable: memory only for the rest of the run, said once."""
        with self._off_lock:
            self.disk_errors += 1
            if not self.disk_enabled:
                return
            self.disk_enabled = False
            self.disk_error = _describe(e)
        log.warning("disk cache switched off: %s: %s; notes are kept in memory only for the rest of the run",
                    self.cache_dir, self.disk_error)

    def _skip_key(self, key: str, what: str) -> None:
        """One note's file cannot be used: that note skips the disk this run (logged once)."""
        self.disk_errors += 1
        if key in self._bad_keys:
            return
        self._bad_keys.add(key)
        log.warning("%s; that note is kept in memory only", what)

    def _save(self, key: str, audio: np.ndarray) -> None:
        payload = audio.astype("<f4").tobytes()
        header = json.dumps({"key": key, "n": int(audio.size), "crc32": zlib.crc32(payload)}).encode()
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + header + b"\n" + payload)
            os.replace(tmp, path)
        except OSError as e:
            try:
                os.unlink(tmp)  # the half-written file, if any
            except OSError:
                pass
            if self._folder_failed(e):
                self._switch_off(e)
            else:
                self._skip_key(key, f"cannot write cache file {path} ({_describe(e)})")
            return
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
        while self._disk_bytes > self.disk_budget_bytes and len(self._files) > 1 and self.disk_enabled:
            name, size = self._files.popitem(last=False)
            try:
                (self.cache_dir / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                if self._folder_failed(e):
                    self._files[name] = size
                    self._files.move_to_end(name, last=False)
                    self._switch_off(e)
                    return
                self.disk_errors += 1  # it stays, so its bytes stay counted
                log.warning("cannot remove cache file %s (%s)", self.cache_dir / name, _describe(e))
                continue
            self._disk_bytes -= size
            self.disk_evictions += 1

    def _load(self, key: str) -> np.ndarray | None:
        path = self._path(key)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:  # a folder where the file should be, no permission, I/O error...
            self.ignored_files += 1
            self._skip_key(key, f"cannot read cache file {path} ({_describe(e)}); the note will be rendered again")
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
        except OSError:
            pass
        self._used(path.name, len(blob))
        return audio
