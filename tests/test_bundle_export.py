"""The exported bundle: every graph in plain onnxruntime equals its torch module, the manifest
describes the ONNX files exactly, and broken bundles fail to load with the named error."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from lmdm_bridge.manifest import (  # noqa: E402
    FORMAT_VERSION,
    MANIFEST,
    BundleError,
    read_manifest,
)
from lmdm_export.bundle.graphs import DIT_GRAPHS  # noqa: E402
from lmdm_export.bundle.writer import (  # noqa: E402
    ExportRequest,
    _examples,
    _tensor_specs,
    export_bundle,
)
from lmdm_export.model.lmdm import LMDM  # noqa: E402
from lmdm_export.model.oobleck import fold_weight_norm  # noqa: E402
from lmdm_export.presets import get_preset  # noqa: E402

from .conftest import randomize_  # noqa: E402

# fp32 graphs against eager torch: kernels differ (fused attention, GEMM blocking); observed
# errors are ~1e-6 on outputs of order 1-10.
TOL = 1e-4


@pytest.fixture(scope="module")
def tiny_model():
    model = LMDM(get_preset("tiny").config).eval()
    randomize_(model.dit, seed=0)
    return model


@pytest.fixture(scope="module")
def bundle(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(tiny_model, out, ExportRequest(preset="tiny"), progress=lambda m: None)
    return out


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_every_graph_matches_torch(tiny_model, bundle):
    folded = LMDM(tiny_model.config)
    folded.load_state_dict(tiny_model.state_dict())
    fold_weight_norm(folded.autoencoder)
    manifest = read_manifest(bundle)
    for role, (module, args, _) in _examples(folded.eval()).items():
        spec = manifest.graphs[role]
        feeds = {i.name: a.numpy() for i, a in zip(spec.inputs, args, strict=True)}
        got = _session(bundle / spec.file).run(None, feeds)
        with torch.no_grad():
            want = module(*args)
        want = want if isinstance(want, tuple) else (want,)
        for o, w, out_spec in zip(got, want, spec.outputs, strict=True):
            err = float(np.abs(o - w.numpy()).max())
            print(f"{role}.{out_spec.name}: max abs error {err:.2e}")
            assert err <= TOL * max(1.0, float(np.abs(w.numpy()).max())), (role, out_spec.name)


def test_manifest_describes_the_onnx_files_exactly(bundle):
    manifest = read_manifest(bundle)
    assert set(manifest.graphs) == {"text_encoder", "conditioning", "vae_decoder", "vae_encoder",
                                    *DIT_GRAPHS}
    for spec in manifest.graphs.values():
        model = onnx.load(str(bundle / spec.file), load_external_data=False)
        assert spec.inputs == _tensor_specs(model.graph.input)
        assert spec.outputs == _tensor_specs(model.graph.output)
        session = _session(bundle / spec.file)
        assert [i.name for i in session.get_inputs()] == [i.name for i in spec.inputs]
        # The example dims make a valid call.
        feeds = {}
        for i in spec.inputs:
            shape = [spec.example_dims[d] if isinstance(d, str) else d for d in i.shape]
            feeds[i.name] = np.zeros(shape, dtype=i.dtype)
        session.run(None, feeds)


def test_dit_weights_are_stored_once(bundle, tiny_model):
    """The six DiT graphs reference the same tensors; weights.bin holds them once. Without the
    de-duplication the file would be at least as large as everything the graphs reference."""
    manifest = read_manifest(bundle)
    referenced = 0
    for spec in manifest.graphs.values():
        model = onnx.load(str(bundle / spec.file), load_external_data=False)
        for tensor in model.graph.initializer:
            info = {e.key: e.value for e in tensor.external_data}
            referenced += int(info.get("length", 0))
    size = (bundle / "weights.bin").stat().st_size
    large = sum(p.numel() * 4 for p in tiny_model.dit.parameters() if p.numel() * 4 >= 1024)
    # Without de-duplication the difference would be <= 0. Six graphs share the DiT, but not
    # every graph uses every weight (the prefill has no time token or output projection) and
    # the exporter stores some weights transposed per graph: about 3.9 copies are saved on tiny.
    assert referenced - size >= 3 * large, (referenced, size, large)


def test_export_refuses_to_overwrite_without_force(tiny_model, bundle):
    with pytest.raises(FileExistsError, match="--force"):
        export_bundle(tiny_model, bundle, progress=lambda m: None)


def _copy(bundle, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundle, dst)
    return dst


def test_changed_byte_is_named(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    path = copy / "bc_cached.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="bc_cached.onnx is corrupt"):
        read_manifest(copy)


def test_missing_graph_is_named(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    (copy / "weights.bin").unlink()
    with pytest.raises(BundleError, match="weights.bin is missing"):
        read_manifest(copy)


def test_newer_format_version_is_refused(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    raw = json.loads((copy / MANIFEST).read_text())
    raw["format_version"] = FORMAT_VERSION + 1
    (copy / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="upgrade lmdm-bridge"):
        read_manifest(copy)


def test_sampler_cfg_interval_in_the_manifest(bundle, tmp_path, capsys):
    """Version 1 manifests (no interval) guide every step; an interval out of order or out of
    [0, 1] is a malformed manifest, and `export --cfg-interval` refuses it before writing."""
    from lmdm_bridge.cli import main as cli_main

    assert read_manifest(bundle).sampler.cfg_interval == (0.0, 1.0)
    copy = _copy(bundle, tmp_path)
    raw = json.loads((copy / MANIFEST).read_text())
    assert raw["format_version"] == FORMAT_VERSION == 2
    raw["format_version"] = 1
    del raw["sampler"]["cfg_interval"]
    (copy / MANIFEST).write_text(json.dumps(raw))
    assert read_manifest(copy).sampler.cfg_interval == (0.0, 1.0)
    for bad in ([0.9, 0.1], [0.0, 1.5], [0.5]):
        raw["sampler"]["cfg_interval"] = bad
        (copy / MANIFEST).write_text(json.dumps(raw))
        with pytest.raises(BundleError, match="malformed.*cfg_interval"):
            read_manifest(copy)
    raw["sampler"]["cfg_interval"] = [0.45, 1.0]
    (copy / MANIFEST).write_text(json.dumps(raw))
    assert read_manifest(copy).sampler.cfg_interval == (0.45, 1.0)

    code = cli_main(["export", "--random-init", "--preset", "tiny", "--out",
                     str(tmp_path / "b"), "--cfg", "3", "--cfg-interval", "0.9", "0.2"])
    assert code != 0
    assert "cfg_interval [0.9, 0.2] must satisfy 0 <= t_lo <= t_hi <= 1" in \
        capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    code = cli_main(["export", "--random-init", "--preset", "tiny", "--out",
                     str(tmp_path / "b"), "--cfg", "3", "--cfg-interval", "0.45", "1"])
    assert code == 0
    sampler = read_manifest(tmp_path / "b").sampler
    assert (sampler.cfg_scale, sampler.cfg_interval) == (3.0, (0.45, 1.0))
    card = (tmp_path / "b" / "model_card.md").read_text()
    assert "CFG 3.0 on t in [0.45, 1]" in card
    capsys.readouterr()
    assert cli_main(["info", str(tmp_path / "b")]) == 0
    assert "CFG 3 on t in [0.45, 1], logSNR -6..2" in capsys.readouterr().out
    # verify's stream check runs the torch rollout with the manifest's interval, as the engine
    assert cli_main(["verify", str(tmp_path / "b")]) == 0
    assert "14/14 checks within tolerance" in capsys.readouterr().out


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(BundleError, match="manifest.json is missing"):
        read_manifest(tmp_path)


def test_spectral_check_ignores_phase_but_not_pitch_or_level():
    """Quantized peak-locked decoders are checked by STFT magnitude: the same partials on
    another phase course pass (the sample-wise check fails them), a partial a semitone off
    fails the int8 tolerance, and a level change shows as its ratio."""
    from lmdm_export.bundle.verify import TOLERANCES, _relative, _spectral_relative

    tolerance = TOLERANCES["int8-all"][2]
    t = np.arange(44100) / 22050

    def tone(f, phase=0.0, gain=1.0):
        return gain * 0.3 * np.sin(2 * np.pi * f * t + phase * t)[None]

    reference = tone(440) + tone(660)
    other_phase = tone(440, phase=3.0) + tone(660, phase=-2.0)  # slowly drifting phases
    assert _relative(other_phase, reference) > 0.3
    assert _spectral_relative(other_phase, reference) < 0.05
    assert _spectral_relative(tone(440 * 2 ** (1 / 12)) + tone(660), reference) > tolerance
    assert _spectral_relative(0.5 * reference, reference) == pytest.approx(0.5, abs=1e-6)
    assert _spectral_relative(np.full_like(reference, np.nan), reference) == float("inf")


def test_half_storage_rounds_trained_weights_but_not_computed_constants():
    """int8-all stores large trained initializers in float16 (a Cast restores float32), but a
    large Constant the graph computes with (the STFT codec's DFT bases) only moves to the
    initializers, in float32: rounded, a basis leaks partials into the quiet bins."""
    from onnx import TensorProto, helper, numpy_helper

    from lmdm_export.bundle.writer import _HALF_STORAGE_ELEMENTS, _store_half

    n = _HALF_STORAGE_ELEMENTS
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(n).astype(np.float32)
    basis = np.cos(np.arange(n, dtype=np.float64) * 0.001).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["basis"], value=numpy_helper.from_array(basis)),
         helper.make_node("Mul", ["x", "weight"], ["scaled"]),
         helper.make_node("Add", ["scaled", "basis"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        initializer=[numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _store_half(model)
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types == {"basis": TensorProto.FLOAT, "weight__fp16": TensorProto.FLOAT16}
    assert not any(node.op_type == "Constant" for node in model.graph.node)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": np.zeros(n, np.float32)})[0], basis)
    half = weight.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": np.ones(n, np.float32)})[0],
                               half + basis, rtol=1e-6, atol=1e-6)


def test_phase_iterations_need_a_peak_locked_codec(tmp_path, capsys):
    from lmdm_bridge.cli import main as cli_main

    code = cli_main(["export", "--random-init", "--preset", "tiny", "--out",
                     str(tmp_path / "b"), "--phase-iterations", "1"])
    assert code != 0
    assert "peak-locked STFT codec" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_backwards_noise_schedule_is_refused(tmp_path, capsys):
    from lmdm_bridge.cli import main as cli_main

    code = cli_main(["export", "--random-init", "--preset", "tiny", "--out",
                     str(tmp_path / "b"), "--logsnr-min", "1", "--logsnr-max", "-3"])
    assert code != 0
    assert "--logsnr-min 1 must be below --logsnr-max -3" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
