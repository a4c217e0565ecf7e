"""gen.checkpoint and gen.model: HF-style round trips, clear errors, float forward sanity."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gen import checkpoint
from gen.model import DIGITS_SPEC, TransformerSpec, forward, init_params, param_shapes

BERT = TransformerSpec(kind="bert", dim=64, heads=4, depth=1, mlp_dim=128, num_classes=0,
                       seq_len=16, vocab_size=100, max_positions=32, type_vocab_size=2,
                       ln_eps=1e-12)


@pytest.mark.parametrize("spec", [DIGITS_SPEC, BERT,
                                  TransformerSpec(kind="vit", num_classes=0, image_size=8,
                                                  patch_size=4, channels=3)])
def test_round_trip(tmp_path, spec):
    params = init_params(spec, seed=1)
    checkpoint.save(tmp_path, spec, params)
    spec2, params2 = checkpoint.load(tmp_path)
    assert spec2 == spec
    assert params2.keys() == params.keys()
    for k in params:
        assert np.array_equal(params2[k], params[k]), k


def test_hf_tensor_names(tmp_path):
    checkpoint.save(tmp_path, DIGITS_SPEC, init_params(DIGITS_SPEC))
    names = load_file(str(tmp_path / "model.safetensors"))
    assert names["vit.embeddings.patch_embeddings.projection.weight"].shape == (32, 1, 2, 2)
    assert names["vit.embeddings.cls_token"].shape == (1, 1, 32)
    assert "vit.encoder.layer.1.attention.attention.query.weight" in names
    assert "classifier.weight" in names
    checkpoint.save(tmp_path / "b", BERT, init_params(BERT))
    names = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert "encoder.layer.0.attention.self.key.bias" in names        # BertModel: no prefix
    assert "embeddings.LayerNorm.weight" in names


def test_extra_tensors_ignored_and_seq_len(tmp_path):
    checkpoint.save(tmp_path, BERT, init_params(BERT))
    t = load_file(str(tmp_path / "model.safetensors"))
    t["pooler.dense.weight"] = np.zeros((64, 64), np.float32)
    save_file(t, str(tmp_path / "model.safetensors"))
    spec, _ = checkpoint.load(tmp_path, seq_len=8)
    assert spec.seq_len == 8


def test_missing_tensor(tmp_path):
    checkpoint.save(tmp_path, DIGITS_SPEC, init_params(DIGITS_SPEC))
    t = load_file(str(tmp_path / "model.safetensors"))
    del t["vit.encoder.layer.1.output.dense.bias"]
    save_file(t, str(tmp_path / "model.safetensors"))
    with pytest.raises(checkpoint.CheckpointError,
                       match="missing tensor 'vit.encoder.layer.1.output.dense.bias'"):
        checkpoint.load(tmp_path)


def test_wrong_shape(tmp_path):
    checkpoint.save(tmp_path, DIGITS_SPEC, init_params(DIGITS_SPEC))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 65
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(checkpoint.CheckpointError, match="layers.0.fc1.weight.*expected"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("edit, message", [
    ({"model_type": "gpt2"}, "unsupported model_type 'gpt2'"),
    ({"hidden_act": "relu"}, "unsupported hidden_act 'relu'"),
    ({"num_attention_heads": 5}, "must be a multiple of heads"),
])
def test_bad_config(tmp_path, edit, message):
    checkpoint.save(tmp_path, DIGITS_SPEC, init_params(DIGITS_SPEC))
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(edit)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(checkpoint.CheckpointError, match="missing model.safetensors"):
        checkpoint.load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="not valid JSON"):
        checkpoint.load(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(checkpoint.CheckpointError, match="cannot read safetensors"):
        checkpoint.load(tmp_path)


def test_spec_validation():
    with pytest.raises(ValueError, match="kind must be one of"):
        TransformerSpec(kind="gpt")
    with pytest.raises(ValueError, match="image_size .* multiple of patch_size"):
        TransformerSpec(image_size=9, patch_size=2)
    with pytest.raises(ValueError, match="vocab_size must be"):
        TransformerSpec(kind="bert")
    with pytest.raises(ValueError, match="unknown TransformerSpec fields"):
        TransformerSpec.from_dict({"kind": "vit", "width": 3})


def test_float_forward_shapes_and_trace():
    params = init_params(DIGITS_SPEC)
    trace = {}
    out = forward(DIGITS_SPEC, params, np.zeros((3, 1, 8, 8)), trace=trace)
    assert out.shape == (3, 10)
    assert trace["layers.1.probs"].shape == (3, 4, 17, 17)
    assert np.allclose(trace["layers.0.probs"].sum(-1), 1)
    assert set(param_shapes(DIGITS_SPEC)) == set(params)
    h = forward(BERT, init_params(BERT), np.zeros((2, 16), np.int64))
    assert h.shape == (2, 16, 64)


def test_shipped_digits_checkpoint():
    from gen.accuracy import DEFAULT_MODEL
    spec, params = checkpoint.load(DEFAULT_MODEL)
    assert spec == DIGITS_SPEC
    size = sum(f.stat().st_size for f in DEFAULT_MODEL.iterdir())
    assert size < 1 << 20
