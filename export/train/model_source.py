"""Where a diffusion stage's model comes from: the default family or a stable-audio-tools model.

The same commands (``data encode``, ``train base/lmdm/arc``, ``export``) train two families:

* the **default family** (``model = ""`` in the stage config): the STFT codec release ``codec``
  and the config's ``geometry`` (:func:`lmdm_export.presets.default_model_config`). What ships,
  trained here on 2 CPU cores.
* the **SAO family** (``model`` = a preset name, ``"sao-small"`` or ``"tiny"``, or the path of a
  stable-audio-tools ``model_config.json``, e.g. Stable Audio Open Small's): Oobleck VAE,
  conditioners and DiT as that config says, initialised from ``weights`` (a stable-audio-tools
  ``.safetensors`` / ``.ckpt``, :func:`lmdm_export.checkpoint.read_weights`). The VAE must come
  from ``weights``: the latents were encoded with it (``data encode --model M --weights W``).
  What a GPU user runs: ``train lmdm`` with ``model`` and ``weights`` set to Stable Audio Open
  Small's files fine-tunes it into an LMDM exactly as the reference does, ``train arc`` follows.

The stage decides the streaming parts (:func:`stage_config`): a base model has no stream and no
input-add groups; an LMDM has the ``inpaint`` group (added when the source model lacks it, its
input projection freshly initialised: "W_add random" in the reference's fine-tune of SAO Small)
and a stream: the source's own when it has one (an LMDM checkpoint, the presets), else
``geometry``'s context and block frames.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from lmdm_export.checkpoint import (
    CheckpointError,
    autoencoder_from_sat,
    compare_keys,
    config_from_sat,
    read_weights,
)
from lmdm_export.model.autoencoder import OobleckAutoencoder
from lmdm_export.model.config import StreamConfig, inpaint_group
from lmdm_export.model.lmdm import LMDM, ModelConfig, from_sat_keys
from lmdm_export.presets import PRESETS, DefaultGeometry, get_preset

PARTS = ("autoencoder", "conditioner", "dit")


def _read_sat_config(path: Path) -> dict:
    if not path.is_file():
        presets = ", ".join(sorted(set(PRESETS) - {"default"}))
        raise FileNotFoundError(f"model {str(path)!r} is neither a preset ({presets}) nor an "
                                "existing model_config.json (a stable-audio-tools checkpoint's)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _preset(model: str) -> ModelConfig | None:
    if model == "default":
        raise ValueError("model 'default' is the default family: leave `model` empty and set "
                         "`codec` and `geometry` instead")
    return get_preset(model).config if model in PRESETS else None


def source_config(model: str, text_encoders: Mapping[str, str] | None = None) -> ModelConfig:
    """The model config ``model`` names: a preset or a stable-audio-tools model_config.json."""
    preset = _preset(model)
    if preset is not None:
        return preset
    path = Path(model)
    try:
        return config_from_sat(_read_sat_config(path), text_encoder_dirs=text_encoders or {})
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: missing or malformed entry {exc}") from exc


def stage_config(config: ModelConfig, stage: str, *, pattern: str,
                 geometry: DefaultGeometry) -> ModelConfig:
    """``config`` shaped for ``stage``: base without stream and input-add groups; lmdm (and arc)
    with the inpaint group and a stream of ``pattern``."""
    dit = config.dit
    if stage == "base":
        return dataclasses.replace(config, dit=dataclasses.replace(dit, input_add_groups=()),
                                   stream=None)
    if "inpaint" not in [g.name for g in dit.input_add_groups]:
        dit = dataclasses.replace(dit, input_add_groups=(inpaint_group(dit.io_channels),
                                                         *dit.input_add_groups))
    own = config.stream
    stream = (dataclasses.replace(own, pattern=pattern) if own is not None else
              StreamConfig(pattern=pattern, context_frames=geometry.context_frames,
                           block_frames=geometry.block_frames))
    return dataclasses.replace(config, dit=dit, stream=stream)


def init_from_state(model: LMDM, state: Mapping[str, Tensor], *,
                    parts: tuple[str, ...] = PARTS) -> list[str]:
    """Copy every tensor of ``state`` (our key names) whose name and shape match into the
    ``parts`` of ``model``; returns the names of the model's tensors left as they were."""
    kept = []
    for part in parts:
        module = getattr(model, part)
        own = module.state_dict()
        prefix = part + "."
        for name, value in own.items():
            given = state.get(prefix + name)
            if given is not None and given.shape == value.shape:
                own[name] = given
            else:
                kept.append(prefix + name)
        module.load_state_dict(own)
    return kept


def init_from_weights(model: LMDM, weights: str | Path, *,
                      parts: tuple[str, ...] = PARTS) -> list[str]:
    """:func:`init_from_state` from a stable-audio-tools weights file. The autoencoder, when
    among ``parts``, must load whole: a VAE half-initialised would encode other latents than
    the ones the stage trains on."""
    kept = init_from_state(model, from_sat_keys(read_weights(weights)), parts=parts)
    missing = [k for k in kept if k.startswith("autoencoder.")]
    if missing:
        raise CheckpointError(
            f"{weights} does not hold this model's autoencoder ({len(missing)} tensors missing "
            f"or of another shape, e.g. {missing[0]}): `weights` must be the checkpoint whose VAE "
            "encoded the latents (`lmdm-bridge data encode --model ... --weights ...`)")
    return kept


def load_autoencoder(model: str, weights: str | Path) -> OobleckAutoencoder:
    """The Oobleck VAE of a SAO-family ``model``, loaded whole from ``weights`` (``data
    encode``; no text encoder or DiT is built)."""
    preset = _preset(model)
    if preset is not None:
        config = preset.autoencoder
    else:
        try:
            config = autoencoder_from_sat(_read_sat_config(Path(model)))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{model}: missing or malformed entry {exc}") from exc
    autoencoder = OobleckAutoencoder(config)
    prefix = "autoencoder."
    state = {k[len(prefix):]: v for k, v in from_sat_keys(read_weights(weights)).items()
             if k.startswith(prefix)}
    report = compare_keys(autoencoder.state_dict(), state)
    if not report.ok:
        raise CheckpointError(f"{weights} does not hold the autoencoder of {model}:\n"
                              f"{report.describe()}")
    autoencoder.load_state_dict(state, strict=True)
    return autoencoder.eval()
