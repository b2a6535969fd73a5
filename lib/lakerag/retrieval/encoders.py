"""The query side's text encoders (the query's vector, the rescoring model, citation checks):
sentence-transformers bi-encoders run by ONNX Runtime (retrieval.encoder_runtime: onnxruntime,
the default) or by torch through sentence-transformers (torch).

Measured on this 2-core AMD EPYC (AVX2): 61 section chunks of the demo's index through
all-mpnet-base-v2, torch 1.72 chunks/s, ONNX Runtime 3.09, largest difference between the two
unit vectors 9.8e-7; one short query (p50 of 40): MiniLM 18.0 -> 7.8 ms, mpnet 77.9 -> 34.4 ms.
Stored vectors that gold made with torch and queries encoded here are interchangeable. Dynamic int8
quantisation was tried and rejected: 1.5x, but its cosines ranked the candidates differently
(Spearman 0.66-0.89 against fp32).

sentence-transformers' own ONNX backend needs optimum-onnx, which requires transformers < 4.58
(we pin 5.24), so the model is exported here with torch.onnx, once per machine into the model
cache, and run with onnxruntime (already installed for the layout model) and the model's own
tokenizer.json; mean pooling and normalisation are the model's own modules, done in numpy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lakerag.weights import load_sentence_model, model_cache, model_path, model_version

log = logging.getLogger(__name__)
PIPELINE = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize"]


class UnsupportedModel(ValueError):
    """A model whose modules this runner does not reproduce (only Transformer + mean Pooling + Normalize)."""


def check_pipeline(folder: Path) -> int:
    """The model's max_seq_length, after checking that its modules are Transformer, mean
    Pooling and Normalize; raises UnsupportedModel otherwise."""
    modules = [m["type"] for m in json.loads((folder / "modules.json").read_text())]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text()) if (folder / "1_Pooling").is_dir() else {}
    others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v and k != "pooling_mode_mean_tokens"]
    if modules != PIPELINE or not pooling.get("pooling_mode_mean_tokens") or others:
        raise UnsupportedModel(f"{folder}: modules {modules} with pooling {others or pooling} are not Transformer + "
                               "mean Pooling + Normalize; set retrieval.encoder_runtime: torch")
    return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])


def onnx_file(name: str) -> Path:
    """Where the export of model `name` is kept: one file per model version."""
    version = hashlib.sha256(model_version(name).encode()).hexdigest()[:12]
    return model_cache() / "onnx" / f"{Path(name).name}-{version}.onnx"


def export(name: str, target: Path) -> None:
    """Export model `name`'s transformer (token ids, attention mask -> last hidden state) to
    `target`, written under another name first so a reader never sees half a file."""
    import torch

    started = time.perf_counter()
    class LastHiddenState(torch.nn.Module):
        """The transformer called by keyword: BERT's and MPNet's forward take different positional arguments."""

        def __init__(self, model: torch.nn.Module):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    transformer = LastHiddenState(load_sentence_model(name)[0].auto_model.eval())
    sample = {"input_ids": torch.ones((1, 8), dtype=torch.long), "attention_mask": torch.ones((1, 8), dtype=torch.long)}
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f"{target.name}.{os.getpid()}.partial")
    dynamic = {0: "batch", 1: "tokens"}
    with torch.inference_mode():
        torch.onnx.export(transformer, (sample["input_ids"], sample["attention_mask"]), str(scratch),
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic,
                                        "last_hidden_state": dynamic}, opset_version=17, dynamo=False)
    scratch.rename(target)
    log.info("exported %s to ONNX in %.1f s: %s", name, time.perf_counter() - started, target)


class OnnxEncoder:
    """`encode(texts)` -> unit vectors, as SentenceTransformer.encode(normalize_embeddings=True) gives."""

    def __init__(self, name: str, threads: int = 0):
        import onnxruntime

        folder = model_path(name)
        max_tokens = check_pipeline(folder)
        path = onnx_file(name)
        if not path.is_file():
            export(name, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        # idle threads must not spin: llama.cpp starts generating right after the reranking
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()  # tokenizer.json pads to a fixed 128; batches are padded here
        special = json.loads((folder / "special_tokens_map.json").read_text())
        pad = special["pad_token"]["content"] if isinstance(special["pad_token"], dict) else special["pad_token"]
        self.pad_id = self.tokenizer.token_to_id(pad)  # MPNet numbers positions by the tokens that are not padding

    def encode(self, texts: list[str], batch_size: int = 16) -> np.ndarray:
        """Unit vectors of `texts`, float32, in their order (batched by length: less padding)."""
        encoded = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encoded], kind="stable")
        vectors = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = [encoded[i] for i in order[start:start + batch_size]]
            width = max(len(e.ids) for e in batch)
            ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, item in enumerate(batch):
                ids[row, :len(item.ids)], mask[row, :len(item.ids)] = item.ids, 1
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            pooled = (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
            if not vectors.shape[1]:
                vectors = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            vectors[order[start:start + batch_size]] = pooled
        return vectors


@lru_cache(maxsize=4)
def onnx_encoder(name: str) -> OnnxEncoder:
    """One ONNX Runtime session per model and process."""
    return OnnxEncoder(name)


def torch_encode(name: str, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit vectors (float32) of `texts` on torch through sentence-transformers (the model is
    loaded once per process); gold's embedding job uses it too."""
    return load_sentence_model(name).encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False).astype(np.float32)


def encode(name: str, texts: list[str], runtime: str = "onnxruntime") -> np.ndarray:
    """Unit vectors (float32) of `texts` by model `name` on `runtime` (onnxruntime | torch)."""
    if runtime == "onnxruntime":
        return onnx_encoder(name).encode(texts)
    return torch_encode(name, texts)
