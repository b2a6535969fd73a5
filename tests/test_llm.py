"""LLM backends: a real local HTTP server for the OpenAI-compatible one, a fake for the remote
Databricks client, and the smallest packaged model for the local one."""
from __future__ import annotations

import logging

import pytest

from lakerag.llm import DatabricksLLM, LLMError, LocalLLM, make_llm
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


def test_openai_backend_needs_a_base_url():
    with pytest.raises(SettingsError, match="base_url"):
        LLMSettings(backend="openai")


@pytest.mark.slow
def test_local_backend_is_deterministic_and_counts_tokens():
    # SmolLM2-135M: the smallest packaged model, for the code path (its answers are poor).
    llm = LocalLLM(LLMSettings(model="smollm2-135m-instruct", max_new_tokens=12))
    first, second = llm.chat(MESSAGES), llm.chat(MESSAGES)
    assert first.text and first.text == second.text
    assert first.prompt_tokens > 10 and 0 < first.completion_tokens <= 12 and first.latency_s > 0
