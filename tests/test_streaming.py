"""Streaming over HTTP: the real endpoint (uvicorn) with the real chain on the corpus index and the
packaged Qwen 0.5B on llama.cpp; the answer arrives as server-sent chat-completion chunks, with
the checked answer and its citations in the last one."""
from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlparse

import pytest

from lakerag.chain.rag import RagChain
from lakerag.chain.llm import make_llm
from lakerag.serving.loadtest import LocalChain, serve_in_background
from lakerag.retrieval.retriever import Retriever
from lakerag.serving.server import create_app
from lakerag.settings import LLMSettings, Settings
from tests.conftest import http_call

pytestmark = pytest.mark.slow
QUESTION = {"messages": [{"role": "user", "content": "What is the format of a Debian binary package?"}]}


def read_events(base: str, body: dict) -> tuple[int, list[tuple[float, str]]]:
    """POST `body` and read the server-sent events as they arrive: (status, [(seconds, data)])."""
    url = urlparse(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    started = time.perf_counter()
    connection.request("POST", "/invocations", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    events = []
    while line := response.readline():
        line = line.decode().strip()
        if line.startswith("data:"):
            events.append((time.perf_counter() - started, line[5:].strip()))
    connection.close()
    return response.status, events


def test_a_streamed_answer_arrives_in_chunks_and_the_last_one_carries_the_checked_answer(corpus_index):
    settings = Settings(llm=LLMSettings(model="qwen2.5-coder-0.5b-instruct", max_new_tokens=60))
    chain = RagChain(Retriever.from_settings(corpus_index[1].folder, settings), make_llm(settings.llm), settings.chain)
    with serve_in_background(create_app(LocalChain(chain), settings.chain, "test")) as base:
        status, events = read_events(base, QUESTION | {"stream": True})
        assert status == 200 and events[-1][1] == "[DONE]"
        chunks = [(at, json.loads(data)) for at, data in events[:-1]]
        pieces = [(at, c["choices"][0]["delta"]["content"]) for at, c in chunks if c["choices"][0]["delta"]]
        last_at, last = chunks[-1]
        # several pieces of text, each earlier than the end: the answer streams
        assert len(pieces) >= 3 and pieces[0][0] < last_at and all(c["object"] == "chat.completion.chunk" for _, c in chunks)
        assert last["choices"][0]["finish_reason"] == "stop" and "result" not in chunks[0][1]
        result = last["result"]
        assert result["draft"] == "".join(p for _, p in pieces).strip()
        assert not result["abstained"] and result["citations"][0]["quotes"] and result["first_token_s"] < result["latency_s"]
        # the unstreamed shape still answers, and a bad stream flag is refused before the queue
        status, _, raw = http_call(base + "/invocations", json.dumps(QUESTION).encode(), timeout=300)
        assert status == 200 and json.loads(raw)["predictions"][0]["answer"]
        status, _, raw = http_call(base + "/invocations", json.dumps(QUESTION | {"stream": "yes"}).encode())
        assert status == 400 and "stream" in json.loads(raw)["message"]
