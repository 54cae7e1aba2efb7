"""The default corpus: the one ``configs/data/default.toml`` spells out (a test pins the two).

Sources were chosen by what the music21 corpus says about each collection (see DATA_CARD.md):
composers long dead, encodings shipped with music21. Left out on purpose: ``essenFolksong``
(its licence file grants non-commercial use only), ``leadSheet`` ("All Rights Reserved"),
``schoenberg`` and ``webern`` (public domain only in some jurisdictions), ``demos`` and
``theoryExercises`` (not music), and the Roman-numeral analyses of Monteverdi (``.rntxt``).
"""

from __future__ import annotations

from lmdm_export.data.config import (
    DataConfig,
    DrumSource,
    LabelConfig,
    LoopInfo,
    LoopSource,
    ScoreSource,
    SoundfontConfig,
)
from lmdm_export.data.drums import HAND_STYLES, MACHINE_STYLES

SOUNDFONTS = (
    SoundfontConfig("fluidr3", "/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm",
                    "MIT (Frank Wen 2000-2002, 2008; parts from public-domain samples)", 2.0),
    SoundfontConfig("musescore-lite", "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
                    "musescore-general-soundfont-small",
                    "MIT (S. Christian Collins; Fluid R3 Mono, MIT), parts public domain or CC0",
                    1.5),
    SoundfontConfig("timgm6mb", "/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont",
                    "GPL-2 (Tim Brechbill 2004, David Bolton 2010)", 0.5),
)

LABELS = (
    LabelConfig("strings", "string ensemble", (48,)),
    LabelConfig("organ", "church organ", (19,)),
    LabelConfig("piano", "piano", (0,)),
    LabelConfig("choir", "choir", (52,)),
    LabelConfig("brass", "brass ensemble", (56, 56, 60, 57, 58)),  # tpt tpt horn tbn tuba
    LabelConfig("woodwinds", "woodwind ensemble", (73, 68, 71, 70)),  # fl ob cl bsn
    LabelConfig("guitar", "nylon guitar", (24,)),
    LabelConfig("harpsichord", "harpsichord", (6,)),
    LabelConfig("flute", "flute", (73,)),
    LabelConfig("violin", "violin", (40,)),
    LabelConfig("clarinet", "clarinet", (71,)),
    LabelConfig("accordion", "accordion", (21,)),
)

FOLK_LABELS = ("flute", "violin", "clarinet", "accordion", "piano", "guitar", "harpsichord")
FOLK_LICENCE = ("tunes from printed collections of 1782-1883 (public domain); ABC transcriptions "
                "by volunteers named in the file headers, shipped with music21, no licence stated")

SCORES = (
    ScoreSource(
        "bach-chorales", "chorales", "chorale",
        ("strings", "organ", "piano", "choir", "brass", "woodwinds", "guitar", "harpsichord"),
        licence="J.S. Bach (1685-1750): public domain; encodings shipped with music21, "
                "no per-file copyright notice",
        variants=4, default_bpm=76.0, max_seconds=40.0),
    ScoreSource(
        "palestrina", "corpus", "mass movement",
        ("choir", "organ", "strings", "brass", "woodwinds"),
        paths=("palestrina/",), licence="G. P. da Palestrina (1525-1594): public domain; Humdrum "
        "encodings marked 'Copyright 2000, John Miller', shipped with music21 by permission, no "
        "licence stated", variants=2, max_pieces=200, default_bpm=66.0, max_seconds=40.0),
    ScoreSource(
        "monteverdi", "corpus", "madrigal", ("choir", "strings", "woodwinds", "brass", "organ"),
        paths=("monteverdi/",), extensions=(".mxl",), licence="C. Monteverdi (1567-1643): public "
        "domain; encodings shipped with music21, no per-file copyright notice",
        variants=3, default_bpm=72.0, use_score_tempo=False, max_seconds=40.0),
    ScoreSource(
        "quartets", "corpus", "quartet movement", ("strings", "woodwinds", "brass", "piano"),
        paths=("haydn/", "mozart/", "beethoven/"), extensions=(".mxl",),
        licence="Haydn, Mozart, Beethoven: public domain; encodings shipped with music21, "
                "no per-file copyright notice",
        variants=3, default_bpm=100.0, max_seconds=40.0),
    ScoreSource("oneills", "corpus", "folk tune", FOLK_LABELS, paths=("oneills1850/",),
                licence=FOLK_LICENCE, variants=2, max_pieces=250, default_bpm=100.0,
                max_seconds=40.0),
    ScoreSource("ryans", "corpus", "folk tune", FOLK_LABELS, paths=("ryansMammoth/",),
                licence=FOLK_LICENCE, variants=2, max_pieces=250, default_bpm=100.0,
                max_seconds=40.0),
    ScoreSource("airds", "corpus", "air", FOLK_LABELS, paths=("airdsAirs/",),
                licence=FOLK_LICENCE, variants=2, max_pieces=150, default_bpm=90.0,
                max_seconds=40.0),
)

# Hand-percussion grooves under the loops' "percussion" label, which the two recorded loops
# alone gave 4.8 minutes of audio (session 16: 31 % prompt adherence, taken for electronic or
# drums). Kits whose hand-percussion keys sound in all three soundfonts.
PERCUSSION = DrumSource(styles=HAND_STYLES, patterns_per_style=15, bpm_range=(70.0, 150.0),
                        kits=(0, 8, 16, 32, 40), label="percussion")

# Synth tracks over drum-machine grooves for the "electronic" label, which the two sonic-pi
# synth loops alone gave 4.8 minutes, all in the train split (session 21: a longer base learns
# them by heart; no held-out reference). The GM electronic and TR-808 kits, machine-tight timing.
ELECTRONIC = DrumSource(styles=MACHINE_STYLES, patterns_per_style=20, bpm_range=(80.0, 140.0),
                        kits=(24, 25), label="electronic", timing_jitter_ms=2.0,
                        velocity_jitter=6)

LOOPS = LoopSource(loops=(
    LoopInfo("loop_amen", "amen break drum loop", "drums", 4),
    LoopInfo("loop_amen_full", "full amen break drum loop", "drums", 16),
    LoopInfo("loop_breakbeat", "breakbeat drum loop", "drums", 4),
    LoopInfo("loop_compus", "glitchy electronic drum loop", "drums", 16),
    LoopInfo("loop_industrial", "industrial drum loop", "drums", 2),
    LoopInfo("loop_garzul", "electronic synth loop", "electronic", 16),
    LoopInfo("loop_mika", "electronic techno loop", "electronic", 16),
    LoopInfo("loop_safari", "hand percussion loop", "percussion", 16),
    LoopInfo("loop_tabla", "tabla loop", "percussion", 16),
))


NOTES = (
    "TimGM6mb is GPL-2: whether audio rendered with it (or weights trained on that audio) is a "
    "derivative work is unsettled; give it weight 0 for a corpus from permissive sources only.",
    "The Palestrina encodings say 'Copyright 2000, John Miller' and carry no licence beyond "
    "music21's permission to redistribute them; drop that source if that matters.",
    "Loop labels and captions other than amen, breakbeat and tabla are guesses from file names "
    "and spectra (nobody listened).",
    "Scores are played without repeats, at one tempo per item, with flat dynamics "
    "(see lmdm_export.data.scores).",
)


def default_config() -> DataConfig:
    return DataConfig(soundfonts=SOUNDFONTS, labels=LABELS, scores=SCORES, drums=DrumSource(),
                      percussion=PERCUSSION, electronic=ELECTRONIC, loops=LOOPS, notes=NOTES)
