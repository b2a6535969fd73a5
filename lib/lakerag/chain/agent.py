"""The RAG chain as an MLflow ResponsesAgent, logged as a model from code:
`mlflow.pyfunc.log_model(python_model=<this file>)`.

ResponsesAgent is the interface Databricks Model Serving, AI Playground, the Review App and
`databricks.agents.deploy` take. Settings come from `mlflow.models.ModelConfig` (the pipeline
settings logged with the model). The index is data, not part of the model: it is resolved when
the model loads (the newest version under retrieval.index_root, followed while it runs; or the
Databricks Vector Search index, which Vector Search keeps in line with gold). `predict` and `predict_stream` are traced by ResponsesAgent itself.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Generator

from mlflow.models import ModelConfig, set_model
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

# Read at import: MLflow hands the logged settings to ModelConfig only while it imports this
# file. Outside a logged model (development) the repository's settings apply, else the defaults
# (ModelConfig refuses an empty mapping, so "no overrides" is spelt {"chain": {}}).
DEVELOPMENT_CONFIG = Path(__file__).resolve().parents[3] / "conf" / "pipeline.yml"
CONFIG = ModelConfig(development_config=str(DEVELOPMENT_CONFIG) if DEVELOPMENT_CONFIG.is_file() else {"chain": {}})


def open_index(settings) -> Any:
    """The retriever the settings name: the live local index or Databricks Vector Search."""
    if settings.retrieval.backend == "vector_search":
        from lakerag.retrieval.vector_search import VectorSearchRetriever

        return VectorSearchRetriever.from_settings(settings)
    from lakerag.retrieval.live_index import LiveIndex

    return LiveIndex.from_settings(settings)


class RagAgent(ResponsesAgent):
    """`lakerag.chain.rag.RagChain` behind MLflow's ResponsesAgent interface."""

    def load_context(self, context) -> None:
        from lakerag.chain.llm import make_llm
        from lakerag.chain.rag import RagChain
        from lakerag.settings import settings_from_dict

        settings = settings_from_dict(CONFIG.to_dict())
        self.access = settings.access
        self.chain = RagChain(open_index(settings), make_llm(settings.llm), settings.chain)

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        """The checked answer as an output message with citation annotations; the whole answer
        record in custom_outputs."""
        from lakerag.chain.responses import chain_input, output_item

        messages, filters, identity = chain_input(request, self.access)
        result = self.chain.answer(messages, filters, identity)
        return ResponsesAgentResponse(output=[output_item(result, f"msg_{uuid.uuid4().hex}")],
                                      custom_outputs=result)

    def predict_stream(self, request: ResponsesAgentRequest) -> Generator[ResponsesAgentStreamEvent, None, None]:
        """Text deltas of the draft as the LLM writes, then the checked answer as one
        output_item.done event carrying the answer record in custom_outputs."""
        from lakerag.chain.responses import chain_input, output_item

        messages, filters, identity = chain_input(request, self.access)
        item_id = f"msg_{uuid.uuid4().hex}"
        for event in self.chain.stream(messages, filters, identity):
            if "delta" in event:
                yield ResponsesAgentStreamEvent(**self.create_text_delta(event["delta"], item_id))
            else:
                yield ResponsesAgentStreamEvent(type="response.output_item.done",
                                                item=output_item(event["result"], item_id),
                                                custom_outputs=event["result"])

    def documents(self, groups: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """The documents of the index in use that `groups` may read, for the chat page's filters."""
        documents = getattr(self.chain.retriever, "documents", None)
        return documents(groups) if documents else []


set_model(RagAgent())
