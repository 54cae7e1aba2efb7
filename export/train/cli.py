"""``lmdm-bridge train STAGE --config FILE [--resume]``: one entry point for every stage.

Each stage is a frozen config dataclass and a ``train(config, resume=...)`` function; the
config file (TOML or JSON) is read strictly, so a misspelt key fails by its dotted name.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib

from lmdm_export.data.config import from_dict

# stage -> (module, config class, train function): only the running stage's module is imported.
STAGES = {
    "autoencoder": ("lmdm_export.train.codec", "CodecTrainConfig", "train"),
    "base": ("lmdm_export.train.diffusion", "DiffusionTrainConfig", "train_base"),
    "lmdm": ("lmdm_export.train.diffusion", "DiffusionTrainConfig", "train_lmdm"),
    "arc": ("lmdm_export.train.arc", "ArcTrainConfig", "train"),
}


def load_stage_config(stage: str, path: Path | None):
    """``(train function, config)`` of ``stage``; no path gives the config's defaults."""
    module_name, class_name, function = STAGES[stage]
    module = importlib.import_module(module_name)
    cls, train = getattr(module, class_name), getattr(module, function)
    if path is None:
        return train, cls()
    if not path.exists():
        raise FileNotFoundError(f"training config {path} not found (examples: configs/train/)")
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    return train, from_dict(cls, raw, where=path.name)


def main(args: argparse.Namespace) -> int:
    train, cfg = load_stage_config(args.stage, args.config)
    train(cfg, resume=args.resume)
    return 0
