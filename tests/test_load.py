"""The endpoint under concurrent load and abuse: a real uvicorn server with the real chain and
retriever on the corpus index; the LLM is a loopback stand-in for a remote endpoint."""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager

import pytest

from lakerag.chain.rag import RagChain
from lakerag.chain.llm import make_llm
from lakerag.serving.loadtest import LocalChain, StubLLMServer, healthy, request_mix, run_load, serve_in_background
from lakerag.retrieval.retriever import Retriever
from lakerag.serving.server import create_app
from lakerag.settings import ChainSettings, LLMSettings, Settings
from tests.conftest import http_call

pytestmark = pytest.mark.slow


@contextmanager
def endpoint(corpus_index, llm_delay: float, **chain):
    """The chain endpoint on the corpus index, with chain.* overridden; yields (base URL, limits)."""
    _, index, _ = corpus_index
    with StubLLMServer(delay=llm_delay) as llm:
        settings = Settings(llm=LLMSettings(backend="openai", model="stub", base_url=llm.base_url, max_retries=0,
                                            api_key_env="NO_KEY_HERE"), chain=ChainSettings(**chain))
        rag = RagChain(Retriever.from_settings(index.folder, settings), make_llm(settings.llm), settings.chain)
        with serve_in_background(create_app(LocalChain(rag), settings.chain, "test")) as base:
            yield base, settings.chain


def test_sixteen_clients_with_a_valid_and_invalid_mix_get_the_right_answers_and_the_server_stays_up(corpus_index):
    with endpoint(corpus_index, llm_delay=0.02) as (base, limits):
        report = run_load(base, limits, clients=16, seconds=3, timeout=120)
    print(report.render())
    assert report.unexpected == {}, report.render()  # every valid request answered, every invalid one refused
    assert report.healthy_after
    kinds = {kind for kind, _, _ in report.outcomes}
    assert kinds == {kind for kind, _, _ in request_mix(limits)}  # each kind was sent at least once
    # refusals do not wait behind answers: validation happens before the queue
    assert report.percentiles("invalid")[1] < report.percentiles("valid")[0]


def post(url: str, body: bytes) -> tuple[int, dict, dict]:
    status, headers, raw = http_call(url, body, timeout=60)
    return status, {name.lower(): value for name, value in headers.items()}, json.loads(raw)


def test_requests_beyond_the_queue_bound_get_503_with_retry_after(corpus_index):
    with endpoint(corpus_index, llm_delay=2.0, max_queued_requests=2) as (base, limits):
        body = json.dumps({"messages": [{"role": "user", "content": "How do I upgrade Debian?"}]}).encode()
        results = []
        threads = [threading.Thread(target=lambda: results.append(post(base + "/invocations", body))) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert healthy(base)
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 503, 503, 503, 503]
    busy = next(r for r in results if r[0] == 503)
    assert busy[1]["retry-after"] == "5" and "chain.max_queued_requests" in busy[2]["message"]
