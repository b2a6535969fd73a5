"""REST endpoint for the chain: `lakerag serve` -> POST /invocations, GET /health, and the chat
page at / (static files in lakerag/serving/static, no build step, nothing from a CDN) with its API:
GET /api/config, GET /api/documents (the served index's documents, for the filters), GET
/documents/<doc_id>.pdf (cited PDFs, from bronze), POST /api/feedback (an assessment on the
answer's MLflow trace), POST/DELETE /api/session (the page's sign-in: the token in an HttpOnly
cookie).

Who asks: with a users file (access.users_file) every route but /health, /ping, the page's
static code and /api/session needs `Authorization: Bearer <token>` (or the page's cookie), else
401; behind an authenticating proxy (access.proxy_user_header) its identity headers count when
the request comes from access.trusted_proxies. Without either, callers are anonymous, which
`serve` allows on loopback only. Answers, the document list and PDFs draw only on documents the
caller's groups may read (a forbidden PDF is a 403); feedback goes only on the caller's own traces.

/invocations speaks MLflow's ResponsesAgent protocol (`{"input": [...], "custom_inputs":
{"filters": [...]}}` -> `{"output": [...], "custom_outputs": {...}}`; with `"stream": true`, its
events as server-sent events), and keeps the earlier shapes: MLflow's scoring protocol
(`{"dataframe_records": [...]}`, `{"inputs": ...}`) and the plain chat shape `{"messages": [...],
"filters": [...]}`, answered as `{"predictions": [answer record, ...]}`; streamed, those get
OpenAI chat-completion chunks whose last one carries the checked answer as "result".
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
from typing import Any, Callable, Iterator

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from lakerag.access.identity import Authenticator, Identity
from lakerag.chain.rag import BadRequest, validate_messages
from lakerag.chain.responses import agent_request, answer_of, message_text, parse_filters
from lakerag.serving.documents import PdfStore
from lakerag.serving.feedback import Feedback, log_feedback
from lakerag.settings import ChainSettings

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "lakerag_token"


class Unauthenticated(Exception):
    """The request proves no identity while authentication is on (answered 401)."""


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, else the sign-in cookie's."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(SESSION_COOKIE)


def request_rows(payload: Any, limits: ChainSettings) -> tuple[bool, list[dict[str, Any]]]:
    """A parsed request body -> (is it ResponsesAgent-shaped, validated ResponsesAgent requests);
    raises BadRequest."""
    if not isinstance(payload, dict):
        raise BadRequest('the body must be a JSON object such as {"input": [{"role": "user", "content": "..."}]}')
    if "input" in payload:
        custom = payload.get("custom_inputs") or {}
        if not isinstance(custom, dict):
            raise BadRequest('"custom_inputs" must be an object such as {"filters": ["file=debian-faq.pdf"]}')
        return True, [_checked(payload["input"], custom.get("filters"), limits)]
    if "dataframe_records" in payload:
        rows = payload["dataframe_records"]
    elif "inputs" in payload:
        rows = payload["inputs"]
    elif "messages" in payload:
        rows = payload
    else:
        raise BadRequest('missing "input": send {"input": [{"role": "user", "content": "..."}]} '
                         '(or {"messages": [...]}, MLflow\'s {"dataframe_records": [...]} / {"inputs": ...})')
    rows = [rows] if isinstance(rows, dict) else rows
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise BadRequest("expected one request object or a non-empty list of them")
    if len(rows) > limits.max_rows_per_request:
        raise BadRequest(f"{len(rows)} requests in one body, more than {limits.max_rows_per_request} "
                         "(chain.max_rows_per_request): send them in smaller batches")
    for row in rows:
        if "messages" not in row:
            raise BadRequest('missing "messages" in a request row')
    return False, [_checked(row["messages"], row.get("filters"), limits) for row in rows]


def _checked(messages: Any, filters: Any, limits: ChainSettings) -> dict[str, Any]:
    """Messages and filter strings, validated, as a ResponsesAgent request; raises BadRequest."""
    parse_filters(filters, '"filters"')
    if isinstance(messages, list):  # Responses content may be a list of text parts
        messages = [{**m, "content": message_text(m["content"])}
                    if isinstance(m, dict) and isinstance(m.get("content"), list) else m for m in messages]
    return agent_request(validate_messages(messages, limits), filters)


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


def sse_events(model: Any, request: dict[str, Any], model_uri: str, responses: bool) -> Iterator[str]:
    """The model's stream for one request as server-sent events, ending with [DONE]: the
    ResponsesAgent events as they are, or (earlier request shapes) chat-completion chunks. A
    failure midway ends the stream with an error event."""
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    try:
        for event in model.predict_stream(request):
            if responses:
                yield f"data: {json.dumps(event)}\n\n"
            elif event.get("type") == "response.output_text.delta":
                yield chunk_event(completion_id, model_uri, event["delta"])
            elif event.get("type") == "response.output_item.done":
                yield chunk_event(completion_id, model_uri, None, answer_of(event))
    except Exception as err:  # noqa: BLE001 - the status line is gone: report it in the stream
        log.exception("streamed request failed")
        message = f"the chain failed: {type(err).__name__}: {err}"
        yield f"data: {json.dumps({'type': 'error', 'message': message, 'error': {'message': message}})}\n\n"
    yield "data: [DONE]\n\n"


def documents_of(model: Any) -> Callable[[], list[dict[str, Any]]] | None:
    """The served agent's document list (the chat page's filters), if it has one."""
    try:
        agent = model.get_raw_model()  # a loaded ResponsesAgent: the RagAgent itself
    except AttributeError:  # not a pyfunc model (a stand-in, or None)
        agent = getattr(model, "agent", None)
    return getattr(agent, "documents", None)


def create_app(model: Any, limits: ChainSettings, model_uri: str, model_version: str | None = None,
               pdfs: PdfStore | None = None, auth: Authenticator = Authenticator(None, None)) -> FastAPI:
    """The FastAPI app around a loaded ResponsesAgent `model`; with `pdfs`, the chat page opens
    cited PDFs too; `auth` says who asks (default: no authentication, everyone anonymous).
    Feedback goes to the tracking store MLflow is pointed at."""
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

    def caller(request: Request) -> Identity:
        """The request's identity (a dependency of every route that returns data)."""
        identity = auth.identify(request.client.host if request.client else None, request.headers,
                                 bearer_token(request))
        if identity is None:
            raise Unauthenticated()
        return identity

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, exc: Unauthenticated) -> JSONResponse:
        return error(401, "authentication required: send Authorization: Bearer <token> (your token from "
                          "`lakerag add-user`), or sign in on the chat page", "UNAUTHENTICATED",
                     {"WWW-Authenticate": "Bearer"})

    @app.post("/api/session", status_code=204)
    async def sign_in(request: Request):
        """The chat page's sign-in: a valid token is kept in an HttpOnly, same-site cookie, so
        that opening a cited PDF (a plain link) carries it too."""
        body = await bounded_body(request)
        if body is None:
            return too_large()
        try:
            token = json.loads(body).get("token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or auth.directory is None or auth.directory.authenticate(token) is None:
            return error(401, "unknown token", "UNAUTHENTICATED")
        response = Response(status_code=204)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    @app.delete("/api/session", status_code=204)
    async def sign_out() -> Response:
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/health")
    @app.get("/ping")
    async def health() -> dict[str, str]:  # async: never queued behind answers in the thread pool
        return {"status": "ok", "model_uri": model_uri}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/config")
    async def config(identity: Identity = Depends(caller)) -> dict[str, Any]:
        """What the page needs to know: the model, who is signed in and the request limits."""
        return {"model_uri": model_uri, "model_version": model_version, "max_messages": limits.max_messages,
                "max_message_chars": limits.max_message_chars, "documents": pdfs is not None,
                "user": identity.user, "authentication": auth.enabled}

    listed = documents_of(model)

    @app.get("/api/documents")
    def documents(identity: Identity = Depends(caller)) -> list[dict[str, Any]]:  # sync: runs in the thread pool
        return listed(identity.groups) if listed else []

    @app.get("/documents/{doc_id}.pdf")
    def pdf(doc_id: str, identity: Identity = Depends(caller)) -> Response:  # sync: delta-rs reads in the pool
        try:
            content = pdfs.pdf(doc_id, identity.groups) if pdfs else None
        except PermissionError as err:
            return error(403, str(err), "PERMISSION_DENIED")
        if content is None:
            return error(404, f"no active document {doc_id!r} in bronze_documents", "NOT_FOUND")
        return Response(content, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="{doc_id}.pdf"'})

    @app.post("/api/feedback", status_code=201)
    async def feedback(request: Request, identity: Identity = Depends(caller)):
        body = await bounded_body(request)
        if body is None:
            return too_large()
        try:
            given = Feedback.parse(json.loads(body))
        except ValueError as err:  # BadRequest, bad JSON or UTF-8
            return error(400, str(err))
        try:
            assessment_id = await run_in_threadpool(log_feedback, given, identity.user)
        except LookupError as err:
            return error(404, str(err), "NOT_FOUND")
        except PermissionError as err:
            return error(403, str(err), "PERMISSION_DENIED")
        return {"assessment_id": assessment_id, "trace_id": given.trace_id}

    @app.post("/invocations")
    async def invocations(request: Request, identity: Identity = Depends(caller)):
        nonlocal admitted
        body = await bounded_body(request)
        if body is None:
            return too_large()
        try:
            payload = json.loads(body)
            responses, rows = request_rows(payload, limits)
            stream = payload.get("stream", False)
            if not isinstance(stream, bool) or (stream and len(rows) != 1):
                raise BadRequest('"stream" is true or false, and a streamed request holds one question')
        except BadRequest as err:  # before ValueError, which it is: its message says what to fix
            return error(400, str(err))
        except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, absurd nesting
            return error(400, f"malformed JSON: {err}")
        for row in rows:  # who asks is what authentication established, whatever the body claims
            row["custom_inputs"]["identity"] = identity.record()

        if admitted >= limits.max_queued_requests:
            return error(503, f"{admitted} requests are already waiting or being answered "
                              f"(chain.max_queued_requests): retry later", "TEMPORARILY_UNAVAILABLE",
                         {"Retry-After": "5"})

        def answer() -> list[dict[str, Any]]:
            with one_at_a_time:
                return [model.predict(row) for row in rows]

        admitted += 1
        if stream:
            # One thread runs the whole stream: MLflow's predict_stream sets a context variable
            # that must be reset in the context that set it (threadpool steps run in several).
            events_out: queue.Queue = queue.Queue()

            def produce() -> None:
                try:
                    with one_at_a_time:
                        for event in sse_events(model, rows[0], model_uri, responses):
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
            responses_out = await run_in_threadpool(answer)
        except BadRequest as err:
            return error(400, str(err))
        except Exception as err:  # noqa: BLE001 - one failed request must not take the server down
            log.exception("request failed")
            return error(500, f"the chain failed: {type(err).__name__}: {err}")
        finally:
            admitted -= 1
        return responses_out[0] if responses else {"predictions": [answer_of(r) for r in responses_out]}

    return app


def serve(model_uri: str, limits: ChainSettings, host: str, port: int, pdfs: PdfStore | None = None,
          auth: Authenticator = Authenticator(None, None)) -> None:
    """Load the model once (the alias resolved to its version), then serve until interrupted;
    refuses a non-loopback `host` when `auth` has no way to authenticate."""
    import uvicorn

    from lakerag.chain.registry import load_chain, resolve_model

    auth.check_bind(host)
    version, load_uri = resolve_model(model_uri)
    log.info("loading %s (version %s)", model_uri, version)
    log.info("authentication: %s", "on" if auth.enabled else "off (every caller is anonymous)")
    app = create_app(load_chain(load_uri), limits, model_uri, version, pdfs, auth)
    log.info("chat page on http://%s:%d/", host, port)
    log.info("serving %s on http://%s:%d/invocations", model_uri, host, port)
    uvicorn.run(app, host=host, port=port, log_level="warning")
