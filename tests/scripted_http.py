"""A real HTTP server on 127.0.0.1 standing in for a remote OpenAI-compatible endpoint: it
answers with scripted replies and records every request, so tests check exactly what we send."""
from __future__ import annotations

import dataclasses

from lakerag.serving.loadtest import LoopbackServer
from lakerag.settings import LLMSettings, Settings


def chat_reply(content: str, prompt_tokens: int = 21, completion_tokens: int = 4) -> dict:
    """An OpenAI chat completion body with `content` as the answer."""
    return {"model": "test-model", "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}


class ScriptedServer(LoopbackServer):
    """Answers the n-th POST with the n-th (status, answer text) of `replies`."""

    def __init__(self, replies: list[tuple[int, str | None]]):
        self.replies, self.requests = list(replies), []

        def respond(path: str, headers: dict, body: object) -> tuple[int, object, dict]:
            self.requests.append({"path": path, "headers": headers, "body": body})
            status, content = self.replies.pop(0)
            payload = chat_reply(content) if status == 200 else {"error": {"message": "busy"}}
            return status, payload, {"Retry-After": "0"} if status == 429 else {}

        super().__init__(respond)


def served_settings(server: ScriptedServer, **summaries) -> Settings:
    """Default settings with the LLM at `server` (no retries) and summaries.* overridden; by
    default two sections of at least 1,000 characters a run (pdflatex-outline.pdf has three)."""
    base = Settings()
    return dataclasses.replace(
        base,
        llm=LLMSettings(backend="openai", model="test-model", base_url=server.base_url, max_retries=0,
                        api_key_env="NO_KEY_HERE"),
        summaries=dataclasses.replace(base.summaries, **({"min_chars": 1000, "max_sections": 2} | summaries)))
