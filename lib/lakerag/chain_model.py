"""The RAG chain as an MLflow model from code: `mlflow.pyfunc.log_model(python_model=<this file>)`.

Settings come from `mlflow.models.ModelConfig` (the pipeline settings logged with the model),
the index folder is a logged artifact, and all heavy loading (index, embedding and reranking
models, LLM) happens in `load_context`, once per process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelConfig, set_model

# Read at import: MLflow hands the logged settings to ModelConfig only while it imports this
# file. Outside a logged model (development) the repository's settings apply, else the defaults
# (ModelConfig refuses an empty mapping, so "no overrides" is spelt {"chain": {}}).
DEVELOPMENT_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "pipeline.yml"
CONFIG = ModelConfig(development_config=str(DEVELOPMENT_CONFIG) if DEVELOPMENT_CONFIG.is_file() else {"chain": {}})


def records(model_input: Any) -> list[dict[str, Any]]:
    """pyfunc input (DataFrame, dict or list of dicts) -> one {messages, filters} dict per request."""
    if isinstance(model_input, pd.DataFrame):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    else:
        rows = list(model_input)
    out = []
    for row in rows:
        filters = _plain(row.get("filters"))
        # a row without filters in a DataFrame holds NaN or None
        out.append({"messages": _plain(row.get("messages")), "filters": filters if isinstance(filters, list) else []})
    return out


def _plain(value: Any) -> Any:
    """numpy arrays (what schema enforcement makes of lists) back to lists, recursively."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class RagChainModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of `lakerag.chain.RagChain`."""

    def load_context(self, context) -> None:
        from lakerag.chain import RagChain
        from lakerag.llm import make_llm
        from lakerag.retriever import Retriever
        from lakerag.settings import settings_from_dict

        settings = settings_from_dict(CONFIG.to_dict())
        self.chain = RagChain(Retriever.from_settings(Path(context.artifacts["index"]), settings),
                              make_llm(settings.llm), settings.chain)

    def predict(self, context, model_input, params=None) -> list[dict[str, Any]]:
        """One answer (answer, citations, contexts, usage) per request row."""
        return [self.chain.answer(row["messages"], _filters(row)) for row in records(model_input)]

    def predict_stream(self, context, model_input, params=None):
        """One request row -> {"delta": text} events as the LLM writes, then {"result": answer}."""
        rows = records(model_input)
        if len(rows) != 1:
            from lakerag.chain import BadRequest

            raise BadRequest(f"a streamed request holds exactly one question, not {len(rows)}")
        yield from self.chain.stream(rows[0]["messages"], _filters(rows[0]))


def _filters(row: dict[str, Any]):
    """The row's filter strings as Filters; raises BadRequest."""
    from lakerag.chain import BadRequest
    from lakerag.retriever import Filters

    try:
        return Filters.parse(list(row["filters"]))
    except ValueError as err:
        raise BadRequest(str(err)) from err


set_model(RagChainModel())
