"""Rendering NSynth-style notes from a General MIDI SoundFont with FluidSynth (no audio driver).

One note: note-on at t=0, held 3 s, note-off, 1 s of release, 16 kHz, exactly 64000 samples,
the mean of FluidSynth's left and right outputs (float output, so quiet notes keep their
resolution until the 16-bit WAV is written).

Decisions, and why:

* **Effects**: FluidSynth's reverb stays on at its defaults (each preset's own reverb send, GM's
  default CC91 = 40), because NSynth kept the instruments' character and the ``reverb`` quality
  needs notes that have some. Chorus is switched off: its LFO would make a note depend on what
  was rendered before it, and chorus is no NSynth quality.
* **Determinism**: FluidSynth keeps state between notes (effects, voice allocation), so a note
  rendered after another is not bit-identical to one rendered first. Every pitch therefore gets a
  fresh synth that renders that pitch's velocities in ascending order; the output depends only on
  (SoundFont, program, pitch, velocity set) and resuming a build reproduces the same files.
* **Level**: never normalised per note (velocity -> loudness must stay learnable). The synth
  runs at gain 1.0 and every sample is multiplied by one ``level_scale`` per SoundFont, found by a
  calibration pass before the build: all melodic presets at velocity 127 on pitches 24..96 in
  steps of 12; the scale puts the loudest of those at ``CALIBRATION_PEAK`` (-9 dBFS), leaving
  headroom for pitches between the probes. It is stored in ``DIR/build.json`` and reused on resume.
"""

from __future__ import annotations

import logging
from ctypes import c_int, c_void_p
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.data.gm import PERCUSSION_BANK
from synth.units import SAMPLE_RATE

logger = logging.getLogger("synth.data.render")

HOLD_S = 3.0
RELEASE_S = 1.0
N_SAMPLES = int(SAMPLE_RATE * (HOLD_S + RELEASE_S))  # 64000
NOTE_OFF_SAMPLE = int(SAMPLE_RATE * HOLD_S)  # 48000
CALIBRATION_PEAK = 10 ** (-9 / 20)
CALIBRATION_PITCHES = (24, 36, 48, 60, 72, 84, 96)
CALIBRATION_VELOCITY = 127
MELODIC_BANK = 0
FLUID_WARN = 2
# Silence rendered after each note so the reverb tail is gone (< -80 dB re the note's peak)
# before the next velocity of the group starts.
FLUSH_S = 2.0


def _fluidsynth():
    import fluidsynth  # imported lazily: the CLI's --help must not need libfluidsynth

    return fluidsynth


_WRITE_FLOAT = None


def _write_float():
    """ctypes binding of fluid_synth_write_float (pyfluidsynth only wraps the 16-bit writer)."""
    global _WRITE_FLOAT
    if _WRITE_FLOAT is None:
        fs = _fluidsynth()
        _WRITE_FLOAT = fs.cfunc(
            "fluid_synth_write_float",
            c_int,
            ("synth", c_void_p, 1),
            ("len", c_int, 1),
            ("lout", c_void_p, 1),
            ("loff", c_int, 1),
            ("lincr", c_int, 1),
            ("rout", c_void_p, 1),
            ("roff", c_int, 1),
            ("rincr", c_int, 1),
        )
    return _WRITE_FLOAT


@dataclass(frozen=True)
class Preset:
    bank: int
    program: int
    name: str


class SoundFontSynth:
    """A FluidSynth instance with one SoundFont loaded, rendering notes to float arrays."""

    def __init__(self, soundfont: str | Path, sfont_ptr: int | None = None):
        """A fresh synth; with `sfont_ptr` it borrows an already loaded SoundFont (see `_loader`)."""
        fs = _fluidsynth()
        path = Path(soundfont)
        if not path.is_file():
            raise FileNotFoundError(f"--soundfont: no such file: {path}")
        self.synth = fs.Synth(
            gain=1.0,
            samplerate=SAMPLE_RATE,
            channels=16,
            **{
                "synth.chorus.active": 0,
                "synth.reverb.active": 1,
                "synth.cpu-cores": 1,
                "synth.polyphony": 64,
                "synth.verbose": 0,
                "synth.dynamic-sample-loading": 1,
            },
        )
        self.borrowed = sfont_ptr
        if sfont_ptr is None:
            self.sfid = self.synth.sfload(str(path))
        else:
            self.sfid = _sfont_api()["add"](self.synth.synth, sfont_ptr)
        if self.sfid < 0:
            self.synth.delete()
            raise ValueError(f"--soundfont: FluidSynth could not load {path} as a SoundFont")

    def close(self) -> None:
        if self.borrowed is not None:
            # Hand the SoundFont back first: deleting the synth would free it.
            _sfont_api()["remove"](self.synth.synth, self.borrowed)
        self.synth.delete()

    @property
    def sfont_ptr(self) -> int:
        return _sfont_api()["get"](self.synth.synth, self.sfid)

    def __enter__(self) -> "SoundFontSynth":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def preset_name(self, bank: int, program: int) -> str | None:
        return self.synth.sfpreset_name(self.sfid, bank, program)

    def melodic_presets(self) -> list[Preset]:
        """Bank-0 presets 0..127 that the SoundFont defines (the drum bank 128 is never listed)."""
        out = []
        for program in range(128):
            name = self.preset_name(MELODIC_BANK, program)
            if name is not None:
                out.append(Preset(MELODIC_BANK, program, name.strip()))
        return out

    def render_note(self, bank: int, program: int, pitch: int, velocity: int) -> np.ndarray:
        """[N_SAMPLES] float32 at gain 1.0: note-on, hold HOLD_S, note-off, release RELEASE_S.

        Afterwards all sound is stopped and the effects are flushed so the next note starts quiet.
        """
        if bank == PERCUSSION_BANK:
            raise ValueError("bank: percussion kits (bank 128) are not rendered")
        write = _write_float()
        s = self.synth
        s.program_select(0, self.sfid, bank, program)
        left = np.zeros(N_SAMPLES, np.float32)
        right = np.zeros(N_SAMPLES, np.float32)
        s.noteon(0, pitch, velocity)
        write(s.synth, NOTE_OFF_SAMPLE, left.ctypes.data, 0, 1, right.ctypes.data, 0, 1)
        s.noteoff(0, pitch)
        off = NOTE_OFF_SAMPLE * 4  # byte offset of the release part in a float32 array
        rest = N_SAMPLES - NOTE_OFF_SAMPLE
        write(s.synth, rest, left.ctypes.data + off, 0, 1, right.ctypes.data + off, 0, 1)
        s.all_sounds_off(0)
        flush = np.zeros(int(SAMPLE_RATE * FLUSH_S), np.float32)
        write(s.synth, len(flush), flush.ctypes.data, 0, 1, flush.ctypes.data, 0, 1)
        return 0.5 * (left + right)


_SFONT_API = None
_LOADERS: dict[str, "SoundFontSynth"] = {}


def _sfont_api():
    global _SFONT_API
    if _SFONT_API is None:
        fs = _fluidsynth()
        _SFONT_API = {
            "add": fs.cfunc("fluid_synth_add_sfont", c_int, ("synth", c_void_p, 1), ("sfont", c_void_p, 1)),
            "remove": fs.cfunc("fluid_synth_remove_sfont", c_int, ("synth", c_void_p, 1), ("sfont", c_void_p, 1)),
            "get": fs.cfunc("fluid_synth_get_sfont_by_id", c_void_p, ("synth", c_void_p, 1), ("id", c_int, 1)),
        }
        # Handing a borrowed SoundFont back makes FluidSynth warn "No preset found" for each
        # channel of the synth about to be deleted; silence its warning level (errors still print).
        set_log = fs.cfunc("fluid_set_log_function", c_void_p, ("level", c_int, 1), ("fun", c_void_p, 1), ("data", c_void_p, 1))
        set_log(FLUID_WARN, None, None)
    return _SFONT_API


def _loader(soundfont: str | Path) -> SoundFontSynth:
    """This process's synth that keeps the SoundFont parsed (loading it costs more than a note)."""
    key = str(Path(soundfont).resolve())
    if key not in _LOADERS:
        _LOADERS[key] = SoundFontSynth(key)
    return _LOADERS[key]


def render_pitch(
    soundfont: str | Path, bank: int, program: int, pitch: int, velocities: list[int]
) -> dict[int, np.ndarray]:
    """All velocities of one (program, pitch) from a fresh synth, in ascending order (deterministic).

    The fresh synth borrows the SoundFont from this process's loader synth, which also keeps the
    preset selected so its samples stay in memory; the output is bit-identical to a synth that
    loaded the file itself (tested).
    """
    loader = _loader(soundfont)
    loader.synth.program_select(0, loader.sfid, bank, program)
    with SoundFontSynth(soundfont, sfont_ptr=loader.sfont_ptr) as sf:
        return {v: sf.render_note(bank, program, pitch, v) for v in sorted(velocities)}


def calibrate_level(soundfont: str | Path, presets: list[Preset]) -> tuple[float, float]:
    """(level_scale, loudest probe peak at gain 1.0) for one SoundFont; see the module docstring."""
    peak = 0.0
    for preset in presets:
        with SoundFontSynth(soundfont) as sf:
            for pitch in CALIBRATION_PITCHES:
                audio = sf.render_note(preset.bank, preset.program, pitch, CALIBRATION_VELOCITY)
                peak = max(peak, float(np.max(np.abs(audio))))
    if not peak > 0:
        raise ValueError("--soundfont: every calibration note was silent")
    return CALIBRATION_PEAK / peak, peak
