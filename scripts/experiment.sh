#!/bin/sh
# A candidate recipe measured against the shipped default, from nothing:
#   sh scripts/experiment.sh NAME        (LMDM=path/to/lmdm-bridge if not .venv/bin/lmdm-bridge)
# trains the stages configured in configs/experiments/NAME: autoencoder.toml (optional; its
# latents are encoded into base.toml's `latents`), base.toml, lmdm.toml; exports the LMDM stage
# in the shipped form into runs/NAME/bundle and writes a quick evaluation of it beside the
# embedded default into runs/NAME/eval-q/report.md. Like `make default-model` it renders the
# corpus and trains the classifier when they are missing, and re-running resumes.
set -eu
LMDM=${LMDM:-.venv/bin/lmdm-bridge}
NAME=${1:?usage: sh scripts/experiment.sh NAME (a folder of configs/experiments)}
DIR=configs/experiments/$NAME
[ -f "$DIR/base.toml" ] && [ -f "$DIR/lmdm.toml" ] || {
    echo "error: $DIR needs base.toml and lmdm.toml (see configs/experiments/*)" >&2; exit 2; }
. scripts/stages.sh

render_corpus
codec=$(config_value "$DIR/base.toml" codec)
latents=$(config_value "$DIR/base.toml" latents)
if [ -f "$DIR/autoencoder.toml" ]; then
    stage autoencoder "$DIR/autoencoder.toml"
    echo "== data: encoding latents into $latents (resumes)"
    $LMDM data encode --codec "$codec" --corpus data/corpus --out "$latents"
elif [ ! -f "$codec" ] || [ ! -d "$latents" ]; then
    echo "error: $codec or $latents is missing; without $DIR/autoencoder.toml the" \
         "experiment uses the default pipeline's: run make default-model first" >&2
    exit 2
fi
stage base "$DIR/base.toml"
stage lmdm "$DIR/lmdm.toml"

# The shipped form (scripts/stages.sh), so the two rows differ only by the recipe.
$LMDM export --checkpoint "$(config_value "$DIR/lmdm.toml" out)/release.pt" \
    --out "runs/$NAME/bundle" --force $SHIPPED_FORM
classifier
$LMDM eval run --bundle shipped=lmdm_bridge/default_bundle --bundle "$NAME=runs/$NAME/bundle" \
    --clips 8 --prompts 2 --stream-minutes 0 --corpus data/corpus --out "runs/$NAME/eval-q"
echo "== done: runs/$NAME/eval-q/report.md"
