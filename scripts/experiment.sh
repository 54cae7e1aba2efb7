#!/bin/sh
# A candidate recipe measured against the shipped default, from nothing:
#   sh scripts/experiment.sh NAME        (LMDM=path/to/lmdm-bridge if not .venv/bin/lmdm-bridge)
# trains the stages configured in configs/experiments/NAME: autoencoder.toml (optional; its
# latents are encoded into base.toml's `latents`), base.toml, lmdm.toml and decoder.toml (a
# decoder fine-tuned on the codec's frozen encoder; optional), a stage the recipe leaves out
# being the default pipeline's (configs/train); exports the LMDM stage in the shipped form into
# runs/NAME/bundle and writes a quick evaluation of it beside the embedded default into
# runs/NAME/eval-q/report.md. Like `make default-model` it renders the corpus and trains the
# classifier when they are missing, and re-running resumes.
set -eu
LMDM=${LMDM:-.venv/bin/lmdm-bridge}
NAME=${1:?usage: sh scripts/experiment.sh NAME (a folder of configs/experiments)}
DIR=configs/experiments/$NAME
{ [ -f "$DIR/base.toml" ] && [ -f "$DIR/lmdm.toml" ]; } || [ -f "$DIR/decoder.toml" ] || {
    echo "error: $DIR needs base.toml and lmdm.toml, or decoder.toml (see" \
         "configs/experiments/*)" >&2; exit 2; }
. scripts/stages.sh

stage_config() {  # the recipe's own config of a stage, else the default pipeline's
    if [ -f "$DIR/$1.toml" ]; then echo "$DIR/$1.toml"; else echo "configs/train/$1.toml"; fi
}
render_corpus
codec=$(config_value "$(stage_config base)" codec)
latents=$(config_value "$(stage_config base)" latents)
if [ -f "$DIR/autoencoder.toml" ]; then
    stage autoencoder "$DIR/autoencoder.toml"
    echo "== data: encoding latents into $latents (resumes)"
    $LMDM data encode --codec "$codec" --corpus data/corpus --out "$latents"
elif [ ! -f "$codec" ] || [ ! -d "$latents" ]; then
    echo "error: $codec or $latents is missing; without $DIR/autoencoder.toml the" \
         "experiment uses the default pipeline's: run make default-model first" >&2
    exit 2
fi
stage base "$(stage_config base)"
stage lmdm "$(stage_config lmdm)"
# The decoder trained on this recipe's codec, when there is one: the recipe's own, or the
# default pipeline's for the default codec (a codec of the recipe's own without a decoder.toml
# decodes with its own decoder).
decoder=$(stage_config decoder)
codec_option=""
if [ "$(config_value "$decoder" init)" = "$codec" ]; then
    stage autoencoder "$decoder"
    codec_option="--codec $(config_value "$decoder" out)/release.pt"
fi

# The shipped form (scripts/stages.sh), so the two rows differ only by the recipe.
$LMDM export --checkpoint "$(config_value "$(stage_config lmdm)" out)/release.pt" \
    --out "runs/$NAME/bundle" --force $SHIPPED_FORM $codec_option
classifier
$LMDM eval run --bundle shipped=lmdm_bridge/default_bundle --bundle "$NAME=runs/$NAME/bundle" \
    --clips 8 --prompts 2 --stream-minutes 0 --corpus data/corpus --out "runs/$NAME/eval-q"
echo "== done: runs/$NAME/eval-q/report.md"
