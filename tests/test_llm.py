"""LLM backends: a real local HTTP server for the OpenAI-compatible one, a fake for the remote
Databricks client, the packaged Qwen 0.5B GGUF on llama.cpp, and the smallest packaged model on
transformers."""
from __future__ import annotations

import json
import logging
import os

import pytest

from lakerag.chain.llm import Completion, DatabricksLLM, LlamaCppLLM, LLMError, TransformersLLM, free_cores, make_llm
from lakerag.serving.loadtest import LoopbackServer
from lakerag.settings import LLMSettings, SettingsError
from tests.scripted_http import ScriptedServer, chat_reply

MESSAGES = [{"role": "system", "content": "Answer from the context."}, {"role": "user", "content": "What is Debian?"}]
ANSWER = "An operating system."
REPLY = chat_reply(ANSWER)


@pytest.fixture
def openai_settings(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret-123")

    def settings(base_url: str) -> LLMSettings:
        return LLMSettings(backend="openai", model="test-model", base_url=base_url, api_key_env="TEST_LLM_KEY",
                           max_new_tokens=64, temperature=0.0, max_retries=3, backoff_s=0.01, timeout_s=5)
    return settings


def test_openai_backend_sends_the_exact_request_and_retries_429_and_500(openai_settings, caplog):
    with ScriptedServer([(429, None), (500, None), (200, ANSWER)]) as server, caplog.at_level(logging.DEBUG):
        completion = make_llm(openai_settings(server.base_url)).chat(MESSAGES)
    expected = {"model": "test-model", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 64, "seed": 0}
    assert [r["body"] for r in server.requests] == [expected] * 3
    assert all(r["path"] == "/v1/chat/completions" for r in server.requests)
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-secret-123"
    assert (completion.text, completion.prompt_tokens, completion.completion_tokens) == (ANSWER, 21, 4)
    assert "sk-secret-123" not in caplog.text and "retry 2/3" in caplog.text


def test_openai_backend_does_not_retry_a_bad_request(openai_settings):
    with ScriptedServer([(400, None)]) as server, pytest.raises(LLMError, match="400"):
        make_llm(openai_settings(server.base_url)).chat(MESSAGES, max_tokens=8, temperature=0.5)
    assert len(server.requests) == 1
    assert (server.requests[0]["body"]["max_tokens"], server.requests[0]["body"]["temperature"]) == (8, 0.5)


def test_openai_backend_gives_up_after_the_retry_budget(openai_settings):
    with ScriptedServer([(503, None)] * 4) as server, pytest.raises(LLMError, match="503"):
        make_llm(openai_settings(server.base_url)).chat(MESSAGES)
    assert len(server.requests) == 4  # the first try and 3 retries


# bounded lists and strings: a grammar fixes the shape, not the length (unbounded, the 0.5B model
# repeated keywords until max_tokens cut the JSON off)
SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 120},
                                          "keywords": {"type": "array", "items": {"type": "string", "maxLength": 40},
                                                       "minItems": 1, "maxItems": 5}},
          "required": ["title", "keywords"]}


def test_openai_backend_forwards_a_schema_as_response_format(openai_settings):
    with ScriptedServer([(200, '{"title": "Debian", "keywords": ["os"]}')]) as server:
        make_llm(openai_settings(server.base_url)).chat(MESSAGES, schema=SCHEMA)
    assert server.requests[0]["body"]["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": SCHEMA}}


def test_openai_backend_streams_server_sent_chunks_and_reads_the_usage_chunk(openai_settings):
    def chunk(**fields) -> str:
        return "data: " + json.dumps({"object": "chat.completion.chunk", **fields}) + "\n\n"

    events = (chunk(choices=[{"delta": {"role": "assistant"}}]) + chunk(choices=[{"delta": {"content": "An "}}])
              + chunk(choices=[{"delta": {"content": "operating system."}}])
              + chunk(choices=[], usage={"prompt_tokens": 9, "completion_tokens": 3}) + "data: [DONE]\n\n")
    requests = []

    def respond(path, headers, body):
        requests.append(body)
        return 200, events.encode(), {"Content-Type": "text/event-stream"}

    with LoopbackServer(respond) as server:
        pieces = list(make_llm(openai_settings(server.base_url)).stream(MESSAGES))
    assert pieces[:-1] == ["An ", "operating system."]
    assert (pieces[-1].text, pieces[-1].prompt_tokens, pieces[-1].completion_tokens) == ("An operating system.", 9, 3)
    assert requests == [{"model": "test-model", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 64, "seed": 0,
                         "stream": True, "stream_options": {"include_usage": True}}]


class FakeDeployClient:
    """Stands in for mlflow.deployments' Databricks client and records predict calls."""

    def __init__(self):
        self.calls = []

    def predict(self, endpoint, inputs):
        self.calls.append({"endpoint": endpoint, "inputs": inputs})
        return REPLY


def test_databricks_backend_calls_the_serving_endpoint_in_chat_format():
    client = FakeDeployClient()
    settings = LLMSettings(backend="databricks", model="databricks-meta-llama", max_new_tokens=100)
    completion = DatabricksLLM(settings, client).chat(MESSAGES)
    assert client.calls == [{"endpoint": "databricks-meta-llama",
                             "inputs": {"messages": MESSAGES, "max_tokens": 100, "temperature": 0.0}}]
    assert completion.completion_tokens == 4
    DatabricksLLM(settings, client).chat(MESSAGES, schema=SCHEMA)
    assert client.calls[1]["inputs"]["response_format"]["json_schema"]["schema"] == SCHEMA


def test_openai_backend_needs_a_base_url():
    with pytest.raises(SettingsError, match="base_url"):
        LLMSettings(backend="openai")


def test_the_old_local_backend_name_says_which_one_to_use_now():
    with pytest.raises(SettingsError, match="use llamacpp for a .gguf file"):
        LLMSettings(backend="local")


def test_free_cores_is_at_least_one_and_at_most_the_allowed_cores():
    assert 1 <= free_cores(0.05) <= len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_llamacpp_backend_answers_streams_and_keeps_to_a_json_schema():
    # The packaged Qwen2.5-Coder-0.5B GGUF, quantised as it is (no fp32 copy).
    llm = make_llm(LLMSettings(model="qwen2.5-coder-0.5b-instruct", max_new_tokens=24))
    assert isinstance(llm, LlamaCppLLM) and 1 <= llm.threads <= len(os.sched_getaffinity(0))
    first, second = llm.chat(MESSAGES), llm.chat(MESSAGES)
    assert first.text and first.text == second.text  # greedy: the same answer
    assert first.prompt_tokens > 10 and 0 < first.completion_tokens <= 24
    pieces = list(llm.stream(MESSAGES))
    assert len(pieces) > 3 and all(isinstance(p, str) for p in pieces[:-1]) and isinstance(pieces[-1], Completion)
    assert "".join(pieces[:-1]).strip() == pieces[-1].text == first.text
    shaped = llm.chat([{"role": "user", "content": "Give a title and keywords for a text about Debian's apt."}],
                      max_tokens=80, schema=SCHEMA)
    data = json.loads(shaped.text)
    assert set(data) == {"title", "keywords"} and isinstance(data["title"], str) and 1 <= len(data["keywords"]) <= 5
    assert all(isinstance(k, str) for k in data["keywords"])
    assert llm.count_tokens("hello world") == 2


@pytest.mark.slow
def test_transformers_backend_is_deterministic_and_counts_tokens():
    # SmolLM2-135M: the smallest packaged model, for the code path (its answers are poor).
    llm = TransformersLLM(LLMSettings(backend="transformers", model="smollm2-135m-instruct", max_new_tokens=12))
    first, second = llm.chat(MESSAGES), llm.chat(MESSAGES)
    assert first.text and first.text == second.text
    assert first.prompt_tokens > 10 and 0 < first.completion_tokens <= 12 and first.latency_s > 0
    pieces = list(llm.stream(MESSAGES))
    assert pieces[-1].text == first.text and "".join(pieces[:-1]).strip() == first.text
