"""REST endpoint for the chain: `lakerag serve` -> POST /invocations, GET /health, and the chat
page at / (static files in lakerag/static, no build step, nothing from a CDN) with its API:
GET /api/config, GET /api/documents (filters), GET /documents/<doc_id>.pdf (cited PDFs, from
bronze), POST /api/feedback (rows in serving_feedback).

Speaks MLflow's scoring protocol (`{"dataframe_records": [...]}`, `{"inputs": ...}`, answers as
`{"predictions": [...]}`) and the plain chat shape `{"messages": [...], "filters": [...]}`. With
`"stream": true` in a one-question request, the answer streams as server-sent events in the
OpenAI chat-completion-chunk shape; the last chunk (finish_reason "stop") carries the checked
answer, its citations and sentence verdicts as "result", then `data: [DONE]`.
Bad requests get a 4xx with a message saying what to fix; a failure inside the chain is a 500
for that request only. One answer is computed at a time (one LLM on the CPU), the others wait,
up to chain.max_queued_requests; beyond that the endpoint answers 503 with Retry-After.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from lakerag.chain import BadRequest, validate_messages
from lakerag.chat import Feedback, LakeFiles
from lakerag.retriever import Filters
from lakerag.settings import ChainSettings

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


def request_rows(payload: Any, limits: ChainSettings) -> list[dict[str, Any]]:
    """A parsed request body -> validated {messages, filters} rows; raises BadRequest."""
    if not isinstance(payload, dict):
        raise BadRequest('the body must be a JSON object such as {"messages": [{"role": "user", "content": "..."}]}')
    if "dataframe_records" in payload:
        rows = payload["dataframe_records"]
    elif "inputs" in payload:
        rows = payload["inputs"]
    elif "messages" in payload:
        rows = payload
    else:
        raise BadRequest('missing "messages": send {"messages": [{"role": "user", "content": "..."}]} '
                         '(or MLflow\'s {"dataframe_records": [...]} / {"inputs": ...})')
    rows = [rows] if isinstance(rows, dict) else rows
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise BadRequest("expected one request object or a non-empty list of them")
    if len(rows) > limits.max_rows_per_request:
        raise BadRequest(f"{len(rows)} requests in one body, more than {limits.max_rows_per_request} "
                         "(chain.max_rows_per_request): send them in smaller batches")
    clean = []
    for row in rows:
        if "messages" not in row:
            raise BadRequest('missing "messages" in a request row')
        filters = row.get("filters") or []
        if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
            raise BadRequest('"filters" must be a list of strings like "file=debian-faq.pdf"')
        try:
            Filters.parse(filters)
        except ValueError as err:
            raise BadRequest(str(err)) from err
        clean.append({"messages": validate_messages(row["messages"], limits), "filters": filters})
    return clean


def chunk_event(completion_id: str, model_uri: str, content: str | None, result: dict | None = None) -> str:
    """One server-sent event in OpenAI's chat.completion.chunk shape: a piece of text, or (with
    `result`) the last chunk, which carries the checked answer."""
    chunk: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": model_uri,
                             "choices": [{"index": 0, "delta": {} if content is None else {"content": content},
                                          "finish_reason": None if result is None else "stop"}]}
    if result is not None:
        chunk["result"] = result
    return f"data: {json.dumps(chunk)}\n\n"


def sse_events(model: Any, row: dict[str, Any], model_uri: str) -> Iterator[str]:
    """The model's stream for one request row as server-sent events, ending with [DONE]; a
    failure midway ends the stream with an error event."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    try:
        for event in model.predict_stream(row):
            if "delta" in event:
                yield chunk_event(completion_id, model_uri, event["delta"])
            else:
                yield chunk_event(completion_id, model_uri, None, event["result"])
    except Exception as err:  # noqa: BLE001 - the status line is gone: report it in the stream
        log.exception("streamed request failed")
        yield f"data: {json.dumps({'error': {'message': f'the chain failed: {type(err).__name__}: {err}'}})}\n\n"
    yield "data: [DONE]\n\n"


def create_app(model: Any, limits: ChainSettings, model_uri: str, model_version: str | None = None,
               lake: LakeFiles | None = None) -> FastAPI:
    """The FastAPI app around a loaded pyfunc chain `model`; with `lake`, the chat page's
    document list, PDFs and feedback too."""
    app = FastAPI(title="lakerag chain", description=f"RAG chain {model_uri}")
    one_at_a_time = threading.Lock()
    admitted = 0  # requests waiting for or holding the lock; only the event loop thread changes it

    def error(status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        code = code or ("BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
        return JSONResponse({"error_code": code, "message": message}, status_code=status, headers=headers)

    async def bounded_body(request: Request) -> bytes | None:
        """The request body, or None when it is over chain.max_request_bytes (the declared length
        is checked first, so a huge body is refused before it is read)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_request_bytes:
            return None
        body = await request.body()
        return body if len(body) <= limits.max_request_bytes else None

    def too_large() -> JSONResponse:
        return error(413, f"request body is larger than {limits.max_request_bytes} bytes (chain.max_request_bytes)")

    @app.get("/health")
    @app.get("/ping")
    async def health() -> dict[str, str]:  # async: never queued behind answers in the thread pool
        return {"status": "ok", "model_uri": model_uri}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        """What the page needs to know: the model and the request limits it should respect."""
        return {"model_uri": model_uri, "model_version": model_version, "max_messages": limits.max_messages,
                "max_message_chars": limits.max_message_chars, "documents": lake is not None}

    @app.get("/api/documents")
    def documents() -> list[dict[str, Any]]:  # sync: delta-rs reads run in the thread pool
        return lake.documents() if lake else []

    @app.get("/documents/{doc_id}.pdf")
    def pdf(doc_id: str) -> Response:
        content = lake.pdf(doc_id) if lake else None
        if content is None:
            return error(404, f"no active document {doc_id!r} in bronze_documents", "NOT_FOUND")
        return Response(content, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="{doc_id}.pdf"'})

    @app.post("/api/feedback", status_code=201)
    async def feedback(request: Request):
        if lake is None:
            return error(503, "feedback needs the lakehouse: start lakerag serve with --lake-root",
                         "TEMPORARILY_UNAVAILABLE")
        body = await bounded_body(request)
        if body is None:
            return too_large()
        try:
            given = Feedback.parse(json.loads(body), limits.max_message_chars * 4)
        except ValueError as err:  # BadRequest, bad JSON or UTF-8
            return error(400, str(err))
        user = request.headers.get(limits.feedback_user_header) if limits.feedback_user_header else None
        feedback_id = await run_in_threadpool(lake.add_feedback, given, model_uri, model_version, user)
        return {"feedback_id": feedback_id}

    @app.post("/invocations")
    async def invocations(request: Request):
        nonlocal admitted
        body = await bounded_body(request)
        if body is None:
            return too_large()
        try:
            payload = json.loads(body)
            rows = request_rows(payload, limits)
            stream = payload.get("stream", False)
            if not isinstance(stream, bool) or (stream and len(rows) != 1):
                raise BadRequest('"stream" is true or false, and a streamed request holds one question')
        except BadRequest as err:  # before ValueError, which it is: its message says what to fix
            return error(400, str(err))
        except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, absurd nesting
            return error(400, f"malformed JSON: {err}")

        if admitted >= limits.max_queued_requests:
            return error(503, f"{admitted} requests are already waiting or being answered "
                              f"(chain.max_queued_requests): retry later", "TEMPORARILY_UNAVAILABLE",
                         {"Retry-After": "5"})

        def answer() -> list[dict[str, Any]]:
            with one_at_a_time:
                return model.predict(rows)

        admitted += 1
        if stream:
            # One thread runs the whole stream: MLflow's predict_stream sets a context variable
            # that must be reset in the context that set it (threadpool steps run in several).
            events_out: queue.Queue = queue.Queue()

            def produce() -> None:
                try:
                    with one_at_a_time:
                        for event in sse_events(model, rows[0], model_uri):
                            events_out.put(event)
                finally:
                    events_out.put(None)

            threading.Thread(target=produce, daemon=True, name="stream").start()

            async def events():
                nonlocal admitted
                try:
                    while (event := await run_in_threadpool(events_out.get)) is not None:
                        yield event
                finally:
                    admitted -= 1

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            predictions = await run_in_threadpool(answer)
        except BadRequest as err:
            return error(400, str(err))
        except Exception as err:  # noqa: BLE001 - one failed request must not take the server down
            log.exception("request failed")
            return error(500, f"the chain failed: {type(err).__name__}: {err}")
        finally:
            admitted -= 1
        return {"predictions": predictions}

    return app


def serve(model_uri: str, limits: ChainSettings, host: str, port: int, lake: LakeFiles | None = None) -> None:
    """Load the model once (the alias resolved to its version), then serve until interrupted."""
    import uvicorn

    from lakerag.batch import resolve_model
    from lakerag.registry import load_chain

    version, load_uri = resolve_model(model_uri)
    log.info("loading %s (version %s)", model_uri, version)
    app = create_app(load_chain(load_uri), limits, model_uri, version, lake)
    log.info("chat page on http://%s:%d/", host, port)
    log.info("serving %s on http://%s:%d/invocations", model_uri, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
