"""The rescoring model on ONNX Runtime gives sentence-transformers' vectors; other models are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lakerag.retrieval.encoders import OnnxEncoder, UnsupportedModel, check_pipeline, encode, onnx_file
from lakerag.settings import RetrievalSettings, SettingsError
from lakerag.weights import load_sentence_model, model_path

MINILM = "all-MiniLM-L6-v2"  # the same Transformer + mean Pooling + Normalize pipeline as mpnet, 5x smaller


def test_onnx_vectors_equal_sentence_transformers_in_input_order(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKERAG_MODEL_CACHE", str(tmp_path))
    # lengths out of order and batches of 2: the encoder sorts by length and must put rows back
    texts = ["Debian packages are .deb files: an ar archive with control and data members. " * 6,
             "apt-get upgrade", "How do I keep my Debian system up to date?", "R reads Excel files " * 80]
    encoder = OnnxEncoder(MINILM)
    vectors = encoder.encode(texts, batch_size=2)
    assert onnx_file(MINILM).parent == tmp_path / "onnx" and onnx_file(MINILM).is_file()
    expected = encode(MINILM, texts, "torch")
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    assert np.abs(vectors - expected).max() < 1e-5
    # the 320-word text is cut at the model's 256 tokens, as sentence-transformers cuts it
    assert len(encoder.tokenizer.encode(texts[3]).ids) == 256


def test_a_model_with_cls_pooling_is_refused_with_what_to_do(tmp_path):
    folder = tmp_path / "cls-model"
    (folder / "1_Pooling").mkdir(parents=True)
    source = model_path(MINILM)
    (folder / "modules.json").write_text((source / "modules.json").read_text())
    (folder / "sentence_bert_config.json").write_text((source / "sentence_bert_config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text((source / "1_Pooling" / "config.json").read_text())
    assert check_pipeline(folder) == 256  # MiniLM's own pipeline, its max_seq_length
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                   "pooling_mode_mean_tokens": False}))
    with pytest.raises(UnsupportedModel, match="encoder_runtime: torch"):
        check_pipeline(folder)


def test_encoder_runtime_must_be_onnxruntime_or_torch():
    assert RetrievalSettings().encoder_runtime == "onnxruntime"
    with pytest.raises(SettingsError, match="onnxruntime or torch"):
        RetrievalSettings(encoder_runtime="openvino")
