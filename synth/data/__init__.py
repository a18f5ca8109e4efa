"""The training data: an NSynth-format data set rendered from General MIDI SoundFonts.

Modules: `gm` (GM program -> name, NSynth family and source), `render` (FluidSynth notes),
`build` (the builder, split rule, drop rules, NSynth layout), `multi` (one data set from several
SoundFonts), `sets` (those SoundFonts, their licences, the reserved ones), `instruments`
(near-duplicates and the split of a multi-set build), `qualities` (the ten quality
analyzers and their thresholds), `features` (pitch-seeded f0 tracker), `reader` (`load_split`
for training; reads the real NSynth json/wav download too), `stats`, `cli`
(`sound-generator dataset build|stats|features`). See README_section.md.
"""
