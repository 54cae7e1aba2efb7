#!/bin/sh
# Listening examples of the embedded default model, one per prompt family, into docs/examples.
# Part of `make default-model`; rerun after shipping a new default. Each file is 12 s of the
# stream from its start (seed 0), rendered by the same engine `make run` plays.
set -eu
LMDM=${LMDM:-.venv/bin/lmdm-bridge}
OUT=${OUT:-docs/examples}
mkdir -p "$OUT"
while IFS='|' read -r name prompt; do
    $LMDM render --prompt "$prompt" --seconds 12 --seed 0 --limiter --out "$OUT/$name.mp3"
done <<'PROMPTS'
organ|church organ chorale in F major, 86 bpm
strings|string ensemble chorale in D minor, 72 bpm
choir|choir mass movement in G major, 70 bpm
piano|piano air in C major, 100 bpm
harpsichord|harpsichord hornpipe in D major, 110 bpm
woodwinds|woodwind ensemble madrigal in Bb major, 68 bpm
violin|violin air in A minor, 96 bpm
accordion|accordion folk tune in G major, 112 bpm
drums|rock drum groove, standard kit, 100 bpm
breakbeat|breakbeat drum loop, 131 bpm
electronic|electronic house track in A minor, 124 bpm
percussion|conga tumbao groove, hand percussion, 104 bpm
PROMPTS
