"""``lmdm-bridge train STAGE --config FILE [--resume]``: one entry point for every stage.

Each stage is a module with a frozen config dataclass and ``train(config, resume=...)``; the
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

# stage -> (module, config class): modules are imported only for the stage that runs.
STAGES = {
    "autoencoder": ("lmdm_export.train.codec", "CodecTrainConfig"),
}


def load_stage_config(stage: str, path: Path | None):
    module_name, class_name = STAGES[stage]
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name)
    if path is None:
        return module, cls()
    if not path.exists():
        raise FileNotFoundError(f"training config {path} not found (examples: configs/train/)")
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    return module, from_dict(cls, raw, where=path.name)


def main(args: argparse.Namespace) -> int:
    module, cfg = load_stage_config(args.stage, args.config)
    module.train(cfg, resume=args.resume)
    return 0
