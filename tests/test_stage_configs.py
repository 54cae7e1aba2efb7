"""The committed stage configs (configs/train, configs/experiments) load as typed configs, the
stages of one recipe chain into each other, scripts/stages.sh reads the values the shell
pipelines use exactly as TOML does, and scripts/experiment.sh exports each recipe with the
decoder trained on its codec.

These configs only run in `make default-model`, `scripts/experiment.sh` and the commands an
ARC experiment's header gives (hours), so a renamed key or a broken path would otherwise
surface mid-pipeline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

pytest.importorskip("torch")

from lmdm_export.train.cli import load_stage_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# A config's stage is its file name, except the default codec's variants.
STAGE_OF = {"codec-linear": "autoencoder", "decoder-gan": "autoencoder", "decoder": "autoencoder"}
RECIPES = [ROOT / "configs" / "train"] + sorted(
    p for p in (ROOT / "configs" / "experiments").iterdir() if p.is_dir())
CONFIGS = sorted(p for d in RECIPES for p in d.glob("*.toml"))


def _stage(path: Path) -> str:
    return STAGE_OF.get(path.stem, path.stem)


def _raw(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_committed_config_loads_as_its_stage(path):
    _, cfg = load_stage_config(_stage(path), path)
    assert Path(cfg.out).parts[0] == "runs"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_stages_of_a_recipe_chain_into_each_other(recipe):
    """A recipe's stages chain into each other; a stage it leaves out is the default
    pipeline's (an ARC-only experiment starts from the default LMDM and base, a decoder-only
    one from the default codec)."""
    default = ROOT / "configs" / "train"

    def stage(name: str) -> dict:
        own = recipe / f"{name}.toml"
        return _raw(own if own.exists() else default / f"{name}.toml")

    base, lmdm = stage("base"), stage("lmdm")
    assert lmdm["init"] == f"{base['out']}/release.pt"
    assert (lmdm["latents"], lmdm["codec"]) == (base["latents"], base["codec"])
    assert lmdm["geometry"] == base["geometry"]
    codec = recipe / "autoencoder.toml"
    if codec.exists():
        assert base["codec"] == f"{_raw(codec)['out']}/release.pt"
    if (recipe / "decoder.toml").exists():  # configs/train has one: the default codec's
        # scripts/experiment.sh and default-model.sh put it into the bundle of this codec
        decoder = _raw(recipe / "decoder.toml")
        assert decoder["init"] == base["codec"] and decoder["freeze_encoder"] is True
    if (recipe / "arc.toml").exists():
        arc = _raw(recipe / "arc.toml")
        assert arc["init"] == f"{lmdm['out']}/release.pt"
        assert arc["base"] == f"{base['out']}/release.pt" and arc["latents"] == lmdm["latents"]
    if recipe.name != "train":  # an experiment never writes over the default pipeline's files
        for name in ("base", "lmdm", "arc", "decoder"):
            if (recipe / f"{name}.toml").exists():
                assert stage(name)["out"] != _raw(default / f"{name}.toml")["out"]
        if codec.exists():
            default_base = _raw(default / "base.toml")
            assert base["latents"] != default_base["latents"]
            assert base["codec"] != default_base["codec"]


SAO_SMALL = ROOT / "configs" / "sao-small"


@pytest.mark.parametrize("stage", ["lmdm", "arc"])
def test_the_sao_small_recipe_loads(stage):
    _, cfg = load_stage_config(stage, SAO_SMALL / f"{stage}.toml")
    assert Path(cfg.out).parts[0] == "runs"
    assert cfg.out != _raw(ROOT / "configs" / "train" / f"{stage}.toml")["out"]


def test_the_sao_small_recipe_chains_from_the_checkpoint():
    """The LMDM fine-tunes the checkpoint; ARC starts from that LMDM, its discriminator from
    the checkpoint, on the same latents."""
    lmdm, arc = _raw(SAO_SMALL / "lmdm.toml"), _raw(SAO_SMALL / "arc.toml")
    assert "init" not in lmdm and lmdm["model"] and lmdm["weights"]
    assert arc["init"] == f"{lmdm['out']}/release.pt" and arc["latents"] == lmdm["latents"]
    assert (arc["base_model"], arc["base"]) == (lmdm["model"], lmdm["weights"])
    assert arc["text_encoders"] == lmdm["text_encoders"]


def test_a_decoder_fine_tune_has_the_geometry_of_the_codec_it_starts_from():
    """`init` must be a codec of the config's own [codec] geometry (else the weights do not
    fit); decoder-gan.toml kept 32 latent channels for a session after the default went to 64."""
    writers = {_raw(p)["out"]: p for p in CONFIGS if _stage(p) == "autoencoder"}
    fine_tunes = [p for p in CONFIGS if _stage(p) == "autoencoder" and "init" in _raw(p)]
    assert fine_tunes, "no committed codec fine-tune config to check"
    for path in fine_tunes:
        init = _raw(path)["init"]
        writer = writers[init.removesuffix("/release.pt")]
        ours, theirs = _raw(path)["codec"], _raw(writer)["codec"]
        ours.pop("phase_iterations", None), theirs.pop("phase_iterations", None)
        assert ours == theirs, (f"{path.name} [codec] differs from {writer.name}, which "
                                f"writes {init}")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_shell_reads_string_values_as_toml_does(path):
    raw = _raw(path)
    keys = [k for k in ("out", "latents", "codec", "init", "corpus") if isinstance(raw.get(k), str)]
    script = ". scripts/stages.sh; " + "; ".join(
        f'printf "%s\\n" "$(config_value {path} {k})"' for k in keys)
    printed = subprocess.run(["sh", "-c", script], cwd=ROOT, check=True, capture_output=True,
                             text=True).stdout.splitlines()
    assert printed == [raw[k] for k in keys]


def test_experiment_script_names_a_missing_recipe():
    done = subprocess.run(["sh", "scripts/experiment.sh", "no-such-recipe"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert ("configs/experiments/no-such-recipe needs base.toml and lmdm.toml, or decoder.toml"
            in done.stderr)


def _experiment_export_line(tmp_path: Path, name: str) -> str:
    """Run scripts/experiment.sh NAME with `echo` for lmdm-bridge in a copy of the scripts and
    configs, where only the default codec and latents exist: every stage "trains" (is echoed),
    and the export command it would run comes back."""
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    (tmp_path / "runs" / "codec").mkdir(parents=True)
    (tmp_path / "runs" / "codec" / "release.pt").touch()
    (tmp_path / "data" / "latents").mkdir(parents=True)
    done = subprocess.run(["sh", "scripts/experiment.sh", name], cwd=tmp_path,
                          env={**os.environ, "LMDM": "echo"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    exports = [line for line in done.stdout.splitlines() if line.startswith("export ")]
    assert len(exports) == 1, done.stdout
    return exports[0]


@pytest.mark.parametrize("name, decoder", [
    ("decoder-ft", "runs/decoder-ft/release.pt"),  # a decoder-only recipe: its own decoder
    ("hand-wordings", "runs/decoder/release.pt"),  # the default codec: the default decoder
    ("from-nothing", None),  # a codec of its own without a decoder.toml: its own decoder
])
def test_an_experiment_exports_with_the_decoder_of_its_codec(tmp_path, name, decoder):
    line = _experiment_export_line(tmp_path, name)
    if decoder is None:
        assert "--codec" not in line
    else:
        assert line.endswith(f"--codec {decoder}")
