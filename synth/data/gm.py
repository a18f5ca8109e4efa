"""General MIDI program table: name, NSynth instrument family and instrument source.

This is the one table that decides `instrument_family` and `instrument_source` of every note the
builder renders. It depends only on the General MIDI program number (0..127, bank 0), never on a
particular SoundFont's presets, so any GM SoundFont gets the same labels.

Sources follow NSynth's meaning:

* ``acoustic``   - a recorded acoustic instrument (piano, violin, sax, pipe organ, ...);
* ``electronic`` - a recorded instrument with electric pickups or electronic tone generation
  that is still played as an instrument (electric piano, electric guitar/bass, drawbar organ,
  telephone ring);
* ``synthetic``  - a synthesizer patch (synth bass/strings/brass/leads/pads/effects, FM electric
  piano, synth drum, reversed cymbal).

Families are NSynth's eleven (bass, brass, flute, guitar, keyboard, mallet, organ, reed, string,
synth_lead, vocal). GM groups map to them directly where one exists; the choices that are not
obvious:

* 8 celesta -> keyboard (keys strike bars, like NSynth's keyboard family); other chromatic
  percussion, timpani (47), kalimba (108) and the GM "percussive" group 112-119 -> mallet;
* 21/23 accordions, 22 harmonica, 109 bagpipe, 111 shanai -> reed (free or double reeds);
* 43 contrabass, 46 harp, 55 orchestra hit, 110 fiddle -> string; 104-107 plucked ethnic -> guitar;
* synth pads (88-95) and synth effects (96-103) -> synth_lead (NSynth has no pad family), except
  the choir-like pads 91 and 94 -> vocal and 98 crystal -> mallet;
* sound effects 120-127 take the nearest family (fret noise -> guitar, breath -> flute, bird ->
  flute, the rest -> synth_lead); most of their notes have no pitch and the builder drops those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from synth.params import SOURCES

# NSynth's family ids (its `instrument_family` integer) in its order.
FAMILIES = (
    "bass",
    "brass",
    "flute",
    "guitar",
    "keyboard",
    "mallet",
    "organ",
    "reed",
    "string",
    "synth_lead",
    "vocal",
)

A, E, S = "acoustic", "electronic", "synthetic"

# program: (GM name, family, source)
GM_PROGRAMS: dict[int, tuple[str, str, str]] = {
    0: ("Acoustic Grand Piano", "keyboard", A),
    1: ("Bright Acoustic Piano", "keyboard", A),
    2: ("Electric Grand Piano", "keyboard", E),
    3: ("Honky-tonk Piano", "keyboard", A),
    4: ("Electric Piano 1", "keyboard", E),
    5: ("Electric Piano 2", "keyboard", S),
    6: ("Harpsichord", "keyboard", A),
    7: ("Clavinet", "keyboard", E),
    8: ("Celesta", "keyboard", A),
    9: ("Glockenspiel", "mallet", A),
    10: ("Music Box", "mallet", A),
    11: ("Vibraphone", "mallet", A),
    12: ("Marimba", "mallet", A),
    13: ("Xylophone", "mallet", A),
    14: ("Tubular Bells", "mallet", A),
    15: ("Dulcimer", "mallet", A),
    16: ("Drawbar Organ", "organ", E),
    17: ("Percussive Organ", "organ", E),
    18: ("Rock Organ", "organ", E),
    19: ("Church Organ", "organ", A),
    20: ("Reed Organ", "organ", A),
    21: ("Accordion", "reed", A),
    22: ("Harmonica", "reed", A),
    23: ("Tango Accordion", "reed", A),
    24: ("Acoustic Guitar (nylon)", "guitar", A),
    25: ("Acoustic Guitar (steel)", "guitar", A),
    26: ("Electric Guitar (jazz)", "guitar", E),
    27: ("Electric Guitar (clean)", "guitar", E),
    28: ("Electric Guitar (muted)", "guitar", E),
    29: ("Overdriven Guitar", "guitar", E),
    30: ("Distortion Guitar", "guitar", E),
    31: ("Guitar Harmonics", "guitar", E),
    32: ("Acoustic Bass", "bass", A),
    33: ("Electric Bass (finger)", "bass", E),
    34: ("Electric Bass (pick)", "bass", E),
    35: ("Fretless Bass", "bass", E),
    36: ("Slap Bass 1", "bass", E),
    37: ("Slap Bass 2", "bass", E),
    38: ("Synth Bass 1", "bass", S),
    39: ("Synth Bass 2", "bass", S),
    40: ("Violin", "string", A),
    41: ("Viola", "string", A),
    42: ("Cello", "string", A),
    43: ("Contrabass", "string", A),
    44: ("Tremolo Strings", "string", A),
    45: ("Pizzicato Strings", "string", A),
    46: ("Orchestral Harp", "string", A),
    47: ("Timpani", "mallet", A),
    48: ("String Ensemble 1", "string", A),
    49: ("String Ensemble 2", "string", A),
    50: ("Synth Strings 1", "string", S),
    51: ("Synth Strings 2", "string", S),
    52: ("Choir Aahs", "vocal", A),
    53: ("Voice Oohs", "vocal", A),
    54: ("Synth Voice", "vocal", S),
    55: ("Orchestra Hit", "string", A),
    56: ("Trumpet", "brass", A),
    57: ("Trombone", "brass", A),
    58: ("Tuba", "brass", A),
    59: ("Muted Trumpet", "brass", A),
    60: ("French Horn", "brass", A),
    61: ("Brass Section", "brass", A),
    62: ("Synth Brass 1", "brass", S),
    63: ("Synth Brass 2", "brass", S),
    64: ("Soprano Sax", "reed", A),
    65: ("Alto Sax", "reed", A),
    66: ("Tenor Sax", "reed", A),
    67: ("Baritone Sax", "reed", A),
    68: ("Oboe", "reed", A),
    69: ("English Horn", "reed", A),
    70: ("Bassoon", "reed", A),
    71: ("Clarinet", "reed", A),
    72: ("Piccolo", "flute", A),
    73: ("Flute", "flute", A),
    74: ("Recorder", "flute", A),
    75: ("Pan Flute", "flute", A),
    76: ("Blown Bottle", "flute", A),
    77: ("Shakuhachi", "flute", A),
    78: ("Whistle", "flute", A),
    79: ("Ocarina", "flute", A),
    80: ("Lead 1 (square)", "synth_lead", S),
    81: ("Lead 2 (sawtooth)", "synth_lead", S),
    82: ("Lead 3 (calliope)", "synth_lead", S),
    83: ("Lead 4 (chiff)", "synth_lead", S),
    84: ("Lead 5 (charang)", "synth_lead", S),
    85: ("Lead 6 (voice)", "synth_lead", S),
    86: ("Lead 7 (fifths)", "synth_lead", S),
    87: ("Lead 8 (bass + lead)", "synth_lead", S),
    88: ("Pad 1 (new age)", "synth_lead", S),
    89: ("Pad 2 (warm)", "synth_lead", S),
    90: ("Pad 3 (polysynth)", "synth_lead", S),
    91: ("Pad 4 (choir)", "vocal", S),
    92: ("Pad 5 (bowed)", "synth_lead", S),
    93: ("Pad 6 (metallic)", "synth_lead", S),
    94: ("Pad 7 (halo)", "vocal", S),
    95: ("Pad 8 (sweep)", "synth_lead", S),
    96: ("FX 1 (rain)", "synth_lead", S),
    97: ("FX 2 (soundtrack)", "synth_lead", S),
    98: ("FX 3 (crystal)", "mallet", S),
    99: ("FX 4 (atmosphere)", "synth_lead", S),
    100: ("FX 5 (brightness)", "synth_lead", S),
    101: ("FX 6 (goblins)", "synth_lead", S),
    102: ("FX 7 (echoes)", "synth_lead", S),
    103: ("FX 8 (sci-fi)", "synth_lead", S),
    104: ("Sitar", "guitar", A),
    105: ("Banjo", "guitar", A),
    106: ("Shamisen", "guitar", A),
    107: ("Koto", "guitar", A),
    108: ("Kalimba", "mallet", A),
    109: ("Bagpipe", "reed", A),
    110: ("Fiddle", "string", A),
    111: ("Shanai", "reed", A),
    112: ("Tinkle Bell", "mallet", A),
    113: ("Agogo", "mallet", A),
    114: ("Steel Drums", "mallet", A),
    115: ("Woodblock", "mallet", A),
    116: ("Taiko Drum", "mallet", A),
    117: ("Melodic Tom", "mallet", A),
    118: ("Synth Drum", "mallet", S),
    119: ("Reverse Cymbal", "mallet", S),
    120: ("Guitar Fret Noise", "guitar", A),
    121: ("Breath Noise", "flute", A),
    122: ("Seashore", "synth_lead", A),
    123: ("Bird Tweet", "flute", A),
    124: ("Telephone Ring", "synth_lead", E),
    125: ("Helicopter", "synth_lead", A),
    126: ("Applause", "synth_lead", A),
    127: ("Gunshot", "synth_lead", A),
}

PERCUSSION_BANK = 128  # GM/GS drum kits live here; the builder never renders them.


@dataclass(frozen=True)
class GMProgram:
    """One General MIDI program with its NSynth labels."""

    program: int
    name: str
    family: str
    source: str

    @property
    def family_id(self) -> int:
        return FAMILIES.index(self.family)

    @property
    def source_id(self) -> int:
        return SOURCES.index(self.source)

    @property
    def slug(self) -> str:
        return slugify(self.name)


def slugify(text: str) -> str:
    """Lower-case ASCII letters, digits and single underscores: 'Lead 2 (sawtooth)' -> 'lead_2_sawtooth'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def gm_program(program: int) -> GMProgram:
    """The table row of a GM program 0..127 (ValueError otherwise)."""
    if isinstance(program, bool) or not isinstance(program, int) or not 0 <= program <= 127:
        raise ValueError(f"program: expected a General MIDI program 0..127, got {program!r}")
    name, family, source = GM_PROGRAMS[program]
    return GMProgram(program, name, family, source)


def _check_table() -> None:
    if sorted(GM_PROGRAMS) != list(range(128)):
        raise AssertionError("GM_PROGRAMS must list programs 0..127 exactly once")
    for prog, (_, family, source) in GM_PROGRAMS.items():
        if family not in FAMILIES or source not in SOURCES:
            raise AssertionError(f"GM program {prog}: bad family/source {family!r}/{source!r}")


_check_table()
