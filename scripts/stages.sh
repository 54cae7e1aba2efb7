# Shared by scripts/default-model.sh and scripts/experiment.sh (sourced, with $LMDM set).

# The embedded default's export options (why each: scripts/default-model.sh). Experiments
# export in the same form, so a candidate differs from the shipped bundle only by its recipe.
# Used unquoted, so the shell splits it into options.
SHIPPED_FORM="--no-source-weights --dtype int8-all --sampler ab2 --steps 8 --cfg 3 \
--cfg-interval 0.45 1 --phase-iterations 1 --calibrate data/corpus"

config_value() {  # config_value FILE KEY: the first `KEY = "..."` line's value (the committed
    # stage configs put their paths before any table; tests/test_stage_configs.py checks it)
    sed -n "s/^$2 = \"\(.*\)\"\$/\1/p" "$1" | head -n 1
}

render_corpus() {  # the default corpus into data/corpus, resuming a partial render
    echo "== data: rendering the corpus into data/corpus (resumes)"
    $LMDM data render --config configs/data/default.toml --out data/corpus
}

classifier() {  # the evaluation's label classifier, trained once, for a number of steps (not
    # the command's default time budget), so machines of any speed share the yardstick
    [ -f runs/classifier/classifier.pt ] || \
        $LMDM eval classifier --corpus data/corpus --out runs/classifier --train-steps 1000
}

stage() {  # stage NAME CONFIG: train unless released, resuming a checkpoint in the config's `out`
    stage_out=$(config_value "$2" out)
    if [ -f "$stage_out/release.pt" ]; then
        echo "== $1: $stage_out/release.pt exists, skipped"
    elif [ -f "$stage_out/checkpoint.pt" ]; then
        echo "== $1: resuming $stage_out"
        $LMDM train "$1" --config "$2" --resume
    else
        echo "== $1: training into $stage_out"
        $LMDM train "$1" --config "$2"
    fi
}
