# Shared by scripts/default-model.sh and scripts/experiment.sh (sourced, with $LMDM set).

config_value() {  # config_value FILE KEY: a top-level string value of a TOML stage config
    sed -n "s/^$2 = \"\(.*\)\"\$/\1/p" "$1" | head -n 1
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
