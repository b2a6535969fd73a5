"""The chain's answers in MLflow's ResponsesAgent shape (OpenAI Responses API items), and back.

A request is `{"input": [{"role": "user", "content": "..."}, ...], "custom_inputs": {"filters":
["file=debian-faq.pdf"]}}`; the response's `output` holds one assistant message whose text is the
checked answer, each verified citation an `url_citation` annotation (the cited PDF at its page);
`custom_inputs.identity` (`{"user": ..., "groups": [...]}`) says who asks: `lakerag serve` and
`serve-batch` set it after authenticating (with access.identity databricks, Model Serving's
caller counts instead); none = anonymous, who reads only the `users` group's documents.
`custom_outputs` carries the whole answer record (citations with quotes, sentence verdicts,
contexts, usage, the index version and the trace id).
"""
from __future__ import annotations

from typing import Any

from lakerag.access.identity import Identity, request_identity
from lakerag.chain.rag import BadRequest
from lakerag.retrieval.retriever import Filters
from lakerag.settings import AccessSettings


def agent_request(messages: list[dict[str, Any]], filters: list[str] | None = None,
                  identity: Identity | None = None) -> dict[str, Any]:
    """Chat messages, filter strings and who asks -> a ResponsesAgent request."""
    custom: dict[str, Any] = {"filters": list(filters or [])}
    if identity is not None:
        custom["identity"] = identity.record()
    return {"input": messages, "custom_inputs": custom}


def message_text(content: Any) -> Any:
    """A message's content as one string (Responses content may be a list of text parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content


def parse_filters(filters: Any, field: str = "custom_inputs.filters") -> Filters:
    """Filter strings of a request (None: no filter) -> Filters; raises BadRequest naming `field`."""
    filters = filters or []
    if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
        raise BadRequest(f'{field} must be a list of strings like "file=debian-faq.pdf"')
    try:
        return Filters.parse(filters)
    except ValueError as err:
        raise BadRequest(str(err)) from err


def chain_input(request: Any, access: AccessSettings = AccessSettings()) -> tuple[list[dict[str, Any]], Filters, Identity]:
    """A ResponsesAgentRequest (or its dict) -> the chain's messages, filters and who asks
    (`request_identity`); raises BadRequest."""
    body = request.model_dump(exclude_none=True) if hasattr(request, "model_dump") else dict(request)
    messages = [{"role": item.get("role"), "content": message_text(item.get("content"))}
                for item in body.get("input", []) if isinstance(item, dict)]
    custom = body.get("custom_inputs") or {}
    try:
        identity = request_identity(custom, access)
    except ValueError as err:
        raise BadRequest(str(err)) from err
    return messages, parse_filters(custom.get("filters")), identity


def annotations(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each verified citation as an url_citation: the cited PDF opened at the supporting page."""
    return [{"type": "url_citation", "title": citation["citation"],
             "url": f"/documents/{citation['doc_id']}.pdf#page={citation.get('page') or citation['page_start']}"}
            for citation in result.get("citations", [])]


def output_item(result: dict[str, Any], item_id: str) -> dict[str, Any]:
    """The answer as a Responses output message with citation annotations."""
    return {"type": "message", "id": item_id, "role": "assistant",
            "content": [{"type": "output_text", "text": result["answer"], "annotations": annotations(result)}]}


def answer_of(response: Any) -> dict[str, Any]:
    """The answer record in a ResponsesAgent response (dict or pydantic) or final stream event."""
    body = response.model_dump(exclude_none=True) if hasattr(response, "model_dump") else response
    outputs = body.get("custom_outputs")
    if not isinstance(outputs, dict) or "answer" not in outputs:
        raise ValueError("the response carries no lakerag answer in custom_outputs")
    return outputs
