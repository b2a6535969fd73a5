"""A real HTTP server on 127.0.0.1 standing in for a remote OpenAI-compatible endpoint: it
answers with scripted replies and records every request, so tests check exactly what we send."""
from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lakerag.settings import LLMSettings, Settings


def chat_reply(content: str, prompt_tokens: int = 21, completion_tokens: int = 4) -> dict:
    """An OpenAI chat completion body with `content` as the answer."""
    return {"model": "test-model", "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}


class ScriptedServer:
    """Answers the n-th POST with the n-th (status, answer text) of `replies`."""

    def __init__(self, replies: list[tuple[int, str | None]]):
        self.replies, self.requests = list(replies), []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, content = owner.replies.pop(0)
                payload = chat_reply(content) if status == 200 else {"error": {"message": "busy"}}
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(json.dumps(payload).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedServer":
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def served_settings(server: ScriptedServer, **summaries) -> Settings:
    """Default settings with the LLM at `server` (no retries) and summaries.* overridden; by
    default two sections of at least 1,000 characters a run (pdflatex-outline.pdf has three)."""
    base = Settings()
    return dataclasses.replace(
        base,
        llm=LLMSettings(backend="openai", model="test-model", base_url=server.base_url, max_retries=0,
                        api_key_env="NO_KEY_HERE"),
        summaries=dataclasses.replace(base.summaries, **({"min_chars": 1000, "max_sections": 2} | summaries)))
