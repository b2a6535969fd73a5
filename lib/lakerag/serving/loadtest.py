"""Load and abuse test for a chain endpoint: N concurrent clients send a fixed mix of valid and
invalid requests for a fixed time; we count outcomes by kind and measure latency.

`python -m lakerag.serving.loadtest --url http://127.0.0.1:8080` runs it against any running endpoint
(`lakerag serve`, `mlflow models serve`); `bench/loadtest.py` (make loadtest) also stands up the
server, with a loopback stand-in for a remote LLM (`StubLLMServer`) so the figures measure our
serving, retrieval and validation rather than the model's speed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from lakerag.settings import AccessSettings, ChainSettings, load_settings

QUESTIONS = (
    "How do I keep my Debian system up to date?",
    "What is the format of a Debian binary package?",
    "How do I read a CSV file into R?",
    "What is the difference between stable and unstable?",
)


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def request_mix(limits: ChainSettings) -> list[tuple[str, bytes, int]]:
    """(kind, body, expected status) of each request in the rotation: half valid, half abuse,
    the abuse sized to go just past each of `limits`."""
    user = {"role": "user", "content": QUESTIONS[0]}
    mix = [(f"valid: question {i + 1}", _body({"messages": [{"role": "user", "content": q}]}), 200)
           for i, q in enumerate(QUESTIONS)]
    mix += [
        ("valid: follow-up", _body({"messages": [user, {"role": "assistant", "content": "Use apt."},
                                                 {"role": "user", "content": "And how often?"}]}), 200),
        ("valid: filtered", _body({"messages": [user], "filters": ["file=debian-faq.pdf"]}), 200),
        ("invalid: malformed JSON", b'{"messages": [', 400),
        ("invalid: no messages", _body({"question": QUESTIONS[0]}), 400),
        ("invalid: empty question", _body({"messages": [{"role": "user", "content": "  "}]}), 400),
        ("invalid: history too long", _body({"messages": [user] * (limits.max_messages + 1)}), 400),
        ("invalid: message too long",
         _body({"messages": [{"role": "user", "content": "x" * (limits.max_message_chars + 1)}]}), 400),
        ("invalid: body too large", _body({"messages": [{"role": "user", "content": "x" * limits.max_request_bytes}]}),
         413),
        ("invalid: too many rows", _body({"dataframe_records": [{"messages": [user]}] * (limits.max_rows_per_request + 1)}),
         400),
        ("invalid: bad filter", _body({"messages": [user], "filters": ["no-equals-sign"]}), 400),
    ]
    return mix


@dataclass
class LoadReport:
    """Outcomes of one load test."""

    clients: int
    seconds: float
    # (kind, expected status, got status or "connection error") -> count
    outcomes: Counter = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"valid": [], "invalid": []})
    healthy_after: bool = False

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def unexpected(self) -> dict[tuple, int]:
        """Outcomes whose status is not the one expected for the kind (503 counts as unexpected)."""
        return {key: n for key, n in self.outcomes.items() if key[1] != key[2]}

    def percentiles(self, group: str) -> tuple[float, float]:
        """(p50, p99) latency in seconds of the valid or invalid requests (NaN if none)."""
        values = self.latencies[group]
        if not values:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(values, [50, 99])
        return float(p50), float(p99)

    def figures(self) -> dict[str, object]:
        """The headline numbers, as JSON-ready values."""
        valid, invalid = self.percentiles("valid"), self.percentiles("invalid")
        return {"clients": self.clients, "seconds": round(self.seconds, 1), "requests": self.requests,
                "requests_per_s": round(self.requests / self.seconds, 2),
                "valid_ok": sum(n for (kind, _, got), n in self.outcomes.items() if kind.startswith("valid") and got == 200),
                "valid_p50_s": round(valid[0], 3), "valid_p99_s": round(valid[1], 3),
                "invalid_p50_s": round(invalid[0], 4), "invalid_p99_s": round(invalid[1], 4),
                "unexpected": sum(self.unexpected.values()), "healthy_after": self.healthy_after}

    def render(self) -> str:
        """A table by kind and status, then the headline numbers."""
        lines = [f"{'kind':28} {'expected':>8} {'got':>16} {'count':>6}"]
        for (kind, expected, got), n in sorted(self.outcomes.items(), key=lambda item: item[0][0]):
            lines.append(f"{kind:28} {expected:>8} {str(got):>16} {n:>6}")
        lines += [f"{key}: {value}" for key, value in self.figures().items()]
        return "\n".join(lines)


def _send(url: str, body: bytes, timeout: float) -> int | str:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code
    except OSError as err:  # refused, reset, timed out: the server did not answer
        return f"connection error ({type(err).__name__})"


def healthy(base_url: str) -> bool:
    """True if GET /health answers 200."""
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def warm_up(base_url: str, limits: ChainSettings, timeout: float = 300.0) -> None:
    """Send each valid request of the mix once, so that model loading and the retriever's
    per-passage rerank vectors do not count against the first measured phase."""
    for _, body, expected in request_mix(limits):
        if expected == 200:
            _send(base_url + "/invocations", body, timeout)


def run_load(base_url: str, limits: ChainSettings, clients: int = 16, seconds: float = 30.0,
             timeout: float = 300.0) -> LoadReport:
    """`clients` threads post the request mix to `base_url`/invocations for `seconds` (requests in
    flight at the end are waited for, up to `timeout`), then check /health."""
    mix = request_mix(limits)
    report = LoadReport(clients, seconds)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        # each client walks the mix from its own offset, so every kind is in flight at once
        for kind, body, expected in itertools.islice(itertools.cycle(mix), offset, None):
            if time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            got = _send(base_url + "/invocations", body, timeout)
            elapsed = time.perf_counter() - started
            with lock:
                report.outcomes[(kind, expected, got)] += 1
                report.latencies["valid" if expected == 200 else "invalid"].append(elapsed)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - started
    report.healthy_after = healthy(base_url)
    return report


class LoopbackServer:
    """An HTTP server on 127.0.0.1, in a thread, answering each POST (and GET, whose body is
    None) with `respond(path, headers, json_body) -> (status, json_payload or bytes, extra_headers)`."""

    def __init__(self, respond: Callable[[str, dict, object], tuple[int, object, dict]]):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                self.answer(None)

            def do_POST(self):  # noqa: N802
                self.answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

            def answer(self, body: object) -> None:
                status, payload, headers = respond(self.path, dict(self.headers), body)
                # bytes go out as they are (e.g. server-sent events, with their Content-Type)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                    **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class StubLLMServer(LoopbackServer):
    """An OpenAI-compatible chat endpoint that answers every request after `delay` seconds with
    a fixed cited answer: a stand-in for a remote LLM, for load tests only."""

    ANSWER = {"model": "stub", "choices": [{"message": {"role": "assistant", "content": "Use the package manager [1]."}}],
              "usage": {"prompt_tokens": 100, "completion_tokens": 8}}

    def __init__(self, delay: float = 0.05):
        def respond(path: str, headers: dict, body: object) -> tuple[int, object, dict]:
            time.sleep(delay)
            return 200, self.ANSWER, {}

        super().__init__(respond)


class LocalChain:
    """A RagChain behind the interface a loaded ResponsesAgent has (`predict(request) -> dict`,
    `predict_stream(request) -> dicts`), without MLflow's registry: the same agent code as the
    registered model, for load tests and benchmarks."""

    def __init__(self, chain, access: AccessSettings = AccessSettings()) -> None:
        from lakerag.chain.agent import RagAgent

        self.agent = RagAgent()
        self.agent.chain, self.agent.access = chain, access

    def predict(self, request: dict) -> dict:
        return self.agent.predict(request).model_dump(exclude_none=True)

    def predict_stream(self, request: dict):
        for event in self.agent.predict_stream(request):
            yield event.model_dump(exclude_none=True)


@contextmanager
def serve_in_background(app) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the endpoint did not start within 30 s")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    """Run the load test against --url and print the report; exit 1 on an unexpected outcome."""
    parser = argparse.ArgumentParser(prog="python -m lakerag.serving.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="endpoint base URL, e.g. http://127.0.0.1:8080 (loopback)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="how long clients keep sending")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout in seconds")
    parser.add_argument("--conf", type=Path, default=None,
                        help="the server's pipeline.yml, so invalid requests go just past its chain.* limits")
    args = parser.parse_args(argv)
    limits = load_settings(args.conf, []).chain if args.conf else ChainSettings()
    report = run_load(args.url.rstrip("/"), limits, args.clients, args.seconds, args.timeout)
    print(report.render())
    return 0 if report.healthy_after and not report.unexpected else 1


if __name__ == "__main__":
    raise SystemExit(main())
