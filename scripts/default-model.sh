#!/bin/sh
# `make default-model`: from nothing to the embedded default bundle, every step a command.
# Re-running resumes: finished stages (a release.pt) are skipped, interrupted ones continue
# from their checkpoint. Run from the repository root with the venv's lmdm-bridge on PATH or
# LMDM=path/to/lmdm-bridge.
set -eu
LMDM=${LMDM:-.venv/bin/lmdm-bridge}

. scripts/stages.sh

render_corpus
stage autoencoder configs/train/autoencoder.toml
echo "== data: encoding latents into data/latents (resumes)"
$LMDM data encode --codec runs/codec/release.pt --corpus data/corpus --out data/latents
# The codec's decoder trained further on the whole corpus, with the encoder, and so the latents,
# frozen (session 28, three evaluation seeds: real audio through the codec 25 % and the
# generated clips 5 % nearer to real audio); every bundle below decodes with it.
stage autoencoder configs/train/decoder.toml
DECODER="--codec runs/decoder/release.pt"
stage base configs/train/base.toml
stage lmdm configs/train/lmdm.toml

# What ships: the fine-tuned LMDM with guidance, which on the default corpus beats the
# ARC-forced model in FD and adherence (session 18: 99 % and 3.31x real-vs-real against 97 %
# and 3.90x; docs/default-model.md), int8 (text encoder per channel), 8 steps, CFG 3 (6 Euler
# steps: 4 % less adherence for 30 % more speed; docs/default-model-history.md). It depends on
# the LMDM stage alone, so it is exported (and verified against the torch model) before
# ARC-Forcing, the longest stage left.
# Every decoder refines the peak-locked phase with one Griffin-Lim iteration (the codec's FD
# ceiling 7.1x -> 4.8x real-vs-real, for 20 ms more per block on the decoder's own thread).
# The fine-tune samples with ab2 (second-order Adams-Bashforth, one network call per step like
# Euler) on Stable Audio Open's logSNR -6..2: quick eval of the shipped form, FD 7.5x (Euler)
# -> 3.7x real-vs-real (docs/default-model-history.md). Its last step (t = 0.27) goes
# unguided: the guidance interval [0.45, 1] keeps the quality, lowers the level and runs faster at batch 1.
# Every decoder is calibrated on the corpus' train split (a gain per frequency bin, so real audio
# comes back through the codec at its own spectral balance; session 13's quick eval of the same
# weights: FD 3.27x -> 2.60x real-vs-real, the codec's own 4.36x -> 3.10x).
$LMDM export --checkpoint runs/lmdm/release.pt --out lmdm_bridge/default_bundle --force \
    $SHIPPED_FORM $DECODER
$LMDM verify lmdm_bridge/default_bundle --checkpoint runs/lmdm/release.pt $DECODER
stage arc configs/train/arc.toml

# Compared with it by eval: the fine-tuned model as an fp32 bundle with 16 AB2 steps
$LMDM export --checkpoint runs/lmdm/release.pt --out runs/bundles/lmdm --force \
    --no-source-weights --sampler ab2 --steps 16 --cfg 3 --phase-iterations 1 \
    --calibrate data/corpus $DECODER
# The ARC-forced model in the shipped form, so it differs from the default only by the ARC
# stage (since session 16; ping-pong 8 without guidance before: 76 % and 16x real-vs-real).
$LMDM export --checkpoint runs/arc/release.pt --out runs/bundles/arc --force $SHIPPED_FORM \
    $DECODER

classifier
# The default first: the report pairs every other bundle's drift segments with its own (the
# ARC stage alone: arc - default). Four streams per label, because one leaves drift in the
# segments' noise (docs/default-model.md, how to read the numbers).
$LMDM eval run --bundle default=lmdm_bridge/default_bundle --bundle arc=runs/bundles/arc \
    --bundle lmdm=runs/bundles/lmdm --streams 4 --classifier runs/classifier/classifier.pt \
    --corpus data/corpus --out runs/eval
LMDM=$LMDM sh scripts/listening-examples.sh
echo "== done: lmdm_bridge/default_bundle; evaluation in runs/eval/report.md; examples in docs/examples"
