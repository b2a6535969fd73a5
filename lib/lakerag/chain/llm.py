"""One chat interface over four backends: a local GGUF model run quantised by llama.cpp
(xllamacpp, the default), a local Hugging Face model through transformers, any
OpenAI-compatible HTTP endpoint, and Databricks serving endpoints (through mlflow.deployments).

Every call takes chat messages ([{"role": ..., "content": ...}]) and returns a Completion with
the text, token counts and latency, so callers can log what a run cost. A call may carry a JSON
schema: llama.cpp enforces it by grammar, the OpenAI-compatible backend forwards it as
`response_format`, and the others ignore it (callers validate and retry either way).
`stream` yields the answer's text as it is generated, then the Completion.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import random
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Protocol

from lakerag.weights import llm_path, llm_tokenizer
from lakerag.settings import LLMSettings, Settings

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]


class MalformedOutput(ValueError):
    """Model output that is not the JSON the prompt asks for."""


def json_in(text: str, kind: type) -> Any:
    """The outermost JSON object (kind dict) or list (kind list) in model output, which may wrap
    it in prose or a code fence; raises MalformedOutput."""
    opener, closer, name = ("{", "}", "object") if kind is dict else ("[", "]", "list")
    start, end = text.find(opener), text.rfind(closer)
    if start < 0 or end <= start:
        raise MalformedOutput(f"no JSON {name} in the output")
    try:
        data = json.loads(text[start: end + 1])
    except json.JSONDecodeError as err:
        raise MalformedOutput(f"invalid JSON: {err}") from err
    if not isinstance(data, kind):
        raise MalformedOutput(f"the JSON is not a {name}")
    return data


@dataclass(frozen=True)
class Completion:
    """What one chat call returned."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    model: str


class LLM(Protocol):
    """A chat model: messages in, a Completion out (or streamed pieces, then a Completion)."""

    def chat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None,
             schema: dict | None = None) -> Completion: ...

    def stream(self, messages: Messages, max_tokens: int | None = None,
               temperature: float | None = None) -> Iterator[str | Completion]: ...

    def count_tokens(self, text: str) -> int: ...


def estimated_tokens(text: str) -> int:
    """About four characters a token: for backends whose tokenizer we cannot run."""
    return len(text) // 4 + 1


def response_format(schema: dict | None) -> dict | None:
    """OpenAI's structured-output field for a JSON schema (None without one)."""
    return None if schema is None else {"type": "json_schema",
                                        "json_schema": {"name": "answer", "strict": True, "schema": schema}}


def chat_body(settings: LLMSettings, messages: Messages, max_tokens: int | None, temperature: float | None,
              schema: dict | None = None, stream: bool = False) -> dict:
    """The OpenAI chat-completions body: model, messages, temperature, max_tokens, seed, and the
    schema as response_format when given."""
    body = {"model": settings.model, "messages": messages,
            "temperature": settings.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or settings.max_new_tokens, "seed": settings.seed}
    if schema is not None:
        body["response_format"] = response_format(schema)
    if stream:
        body["stream"] = True
    return body


def _whole(llm: Any, messages: Messages, max_tokens: int | None, temperature: float | None) -> Iterator[str | Completion]:
    """A stream of one piece, for backends that do not stream."""
    completion = llm.chat(messages, max_tokens, temperature)
    yield completion.text
    yield completion


def free_cores(sample_s: float = 0.2) -> int:
    """Cores this process may use that are not busy now (at least 1).

    llama.cpp's threads spin while they wait for each other: one thread on a core that another
    process keeps busy slows generation down twenty times (measured: 0.8 tok/s instead of 14), so
    the default thread count leaves busy cores alone. Busy = the share of non-idle time in
    /proc/stat over `sample_s`, times the machine's cores."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def times() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total_0, idle_0 = times()
        time.sleep(sample_s)
        total_1, idle_1 = times()
    except (OSError, ValueError, IndexError):
        return allowed
    busy_share = 1 - (idle_1 - idle_0) / max(1, total_1 - total_0)
    busy = round(busy_share * (os.cpu_count() or allowed))
    return max(1, min(allowed, (os.cpu_count() or allowed) - busy))


class LLMError(RuntimeError):
    """A backend failed for good (after retries, or with an error retrying cannot fix)."""


def _dequantised_copy(gguf: Path) -> Path:
    """Where the fp32 transformers copy of a .gguf file is kept (keyed by name, size, mtime)."""
    from lakerag.weights import model_cache

    stat = gguf.stat()
    return model_cache() / f"{gguf.stem}-{stat.st_size:x}-{stat.st_mtime_ns:x}-fp32"


@lru_cache(maxsize=2)
def _load_local(path: str):
    """Tokenizer and model from a model folder or a .gguf file, once per process.

    A .gguf file is dequantised to fp32 by transformers, which takes about 40 s for the 0.5B
    model on 2 cores; the result is saved once beside the model cache as safetensors, so later
    processes (serving, batch jobs, tests) load in seconds."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    location = Path(path)
    if location.suffix == ".gguf":
        copy = _dequantised_copy(location)
        if not (copy / "config.json").is_file():
            log.info("dequantising %s once into %s", location.name, copy)
            tokenizer = AutoTokenizer.from_pretrained(str(location.parent), gguf_file=location.name)
            model = AutoModelForCausalLM.from_pretrained(str(location.parent), gguf_file=location.name,
                                                         dtype=torch.float32)
            scratch = copy.with_name(copy.name + f".{os.getpid()}.tmp")
            # The weights are plain fp32 now; transformers only refuses because the model still
            # remembers it came from a GGUF file.
            model.hf_quantizer = None
            model.config.__dict__.pop("quantization_config", None)
            model.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            shutil.rmtree(copy, ignore_errors=True)
            scratch.rename(copy)
        location = copy
    tokenizer = AutoTokenizer.from_pretrained(str(location))
    model = AutoModelForCausalLM.from_pretrained(str(location), dtype=torch.float32)
    model.eval()
    return tokenizer, model


class TransformersLLM:
    """A transformers causal LM on the CPU with its chat template; greedy unless temperature > 0.
    Ignores a schema (callers validate)."""

    def __init__(self, settings: LLMSettings):
        self.settings = settings
        self.path = llm_path(settings.model)
        self.tokenizer, self.model = _load_local(str(self.path))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _generate(self, messages: Messages, max_tokens: int | None, temperature: float | None, streamer=None):
        import torch

        temperature = self.settings.temperature if temperature is None else temperature
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(self.settings.seed)
            sampling = {"do_sample": True, "temperature": temperature}
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_tokens or self.settings.max_new_tokens,
                                         pad_token_id=self.tokenizer.eos_token_id, streamer=streamer, **sampling)
        prompt_tokens = inputs["input_ids"].shape[1]
        return int(prompt_tokens), output[0, prompt_tokens:]

    def chat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None,
             schema: dict | None = None) -> Completion:
        started = time.perf_counter()
        prompt_tokens, generated = self._generate(messages, max_tokens, temperature)
        return Completion(self.tokenizer.decode(generated, skip_special_tokens=True).strip(), prompt_tokens,
                          int(generated.shape[0]), time.perf_counter() - started, self.settings.model)

    def stream(self, messages: Messages, max_tokens: int | None = None,
               temperature: float | None = None) -> Iterator[str | Completion]:
        from transformers import TextIteratorStreamer

        started = time.perf_counter()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                result["out"] = self._generate(messages, max_tokens, temperature, streamer)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = err
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        pieces = []
        for piece in streamer:
            if piece:
                pieces.append(piece)
                yield piece
        worker.join()
        if "error" in result:
            raise LLMError(f"{type(result['error']).__name__}: {result['error']}") from result["error"]
        prompt_tokens, generated = result["out"]
        yield Completion("".join(pieces).strip(), prompt_tokens, int(generated.shape[0]),
                         time.perf_counter() - started, self.settings.model)


@lru_cache(maxsize=2)
def _llama_server(path: str, context_window: int, threads: int, draft: str):
    """One llama.cpp server (in process, no port) per model file and settings."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_ctx = context_window
    params.n_parallel = 1  # one answer at a time: the whole context window is its
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = 0  # llama.cpp logs every slot step at the default level
    params.cache_prompt = True  # the fixed system prompt is read once, then reused
    if draft:

        params.speculative.types = [xllamacpp.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
        params.speculative.draft.mparams.path = draft
        params.speculative.draft.cpuparams.n_threads = threads
        params.speculative.draft.cpuparams_batch.n_threads = threads
    log.info("llama.cpp: %s, %d threads, context %d", Path(path).name, threads, context_window)
    return xllamacpp.Server(params)


_END = object()


class LlamaCppLLM:
    """A GGUF model run quantised by llama.cpp in this process (xllamacpp's prebuilt wheel): no
    dequantised copy, a prompt cache, JSON schemas enforced by grammar, streaming."""

    def __init__(self, settings: LLMSettings):
        self.settings = settings
        self.path = llm_path(settings.model)
        if self.path.suffix != ".gguf":
            raise ValueError(f"llm.backend llamacpp runs .gguf files; {self.path} is not one "
                             "(use llm.backend transformers for a Hugging Face folder)")
        self.threads = settings.threads or free_cores()
        draft = str(llm_path(settings.draft_model)) if settings.draft_model else ""
        self.server = _llama_server(str(self.path), settings.context_window, self.threads, draft)
        self.tokenizer = llm_tokenizer(self.path)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _completion(self, reply: dict, text: str, started: float) -> Completion:
        timings = reply.get("timings") or {}
        usage = reply.get("usage") or {}
        prompt = usage.get("prompt_tokens", timings.get("cache_n", 0) + timings.get("prompt_n", 0))
        generated = usage.get("completion_tokens", timings.get("predicted_n", 0))
        return Completion(text.strip(), int(prompt), int(generated), time.perf_counter() - started, self.settings.model)

    def chat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None,
             schema: dict | None = None) -> Completion:
        started = time.perf_counter()
        try:
            reply = self.server.handle_chat_completions(chat_body(self.settings, messages, max_tokens, temperature,
                                                                  schema))
        except RuntimeError as err:  # e.g. output cut off by max_tokens inside a schema's grammar
            raise LLMError(f"llama.cpp: {err}") from err
        if "error" in reply:
            raise LLMError(f"llama.cpp: {reply['error']}")
        return self._completion(reply, reply["choices"][0]["message"]["content"] or "", started)

    def stream(self, messages: Messages, max_tokens: int | None = None,
               temperature: float | None = None) -> Iterator[str | Completion]:
        started = time.perf_counter()
        chunks: queue.Queue = queue.Queue()
        stop = threading.Event()  # set when the consumer goes away: llama.cpp stops generating

        def on_chunk(chunk: dict) -> bool:
            chunks.put(chunk)
            return stop.is_set()

        def run() -> None:
            try:
                self.server.handle_chat_completions(
                    chat_body(self.settings, messages, max_tokens, temperature, stream=True), on_chunk)
            except BaseException as err:  # noqa: BLE001 - re-raised in the consumer's thread
                chunks.put(err)
            chunks.put(_END)

        threading.Thread(target=run, daemon=True, name="llama.cpp").start()
        pieces, last = [], {}
        try:
            while (chunk := chunks.get()) is not _END:
                if isinstance(chunk, BaseException):
                    raise LLMError(f"llama.cpp: {chunk}") from chunk
                if "error" in chunk:
                    raise LLMError(f"llama.cpp: {chunk['error']}")
                last = chunk
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        pieces.append(piece)
                        yield piece
        finally:
            stop.set()
        yield self._completion(last, "".join(pieces), started)


def _with_retries(call, settings: LLMSettings, retryable) -> Any:
    """`call()` with up to max_retries retries on retryable errors, exponential backoff + jitter."""
    for attempt in range(settings.max_retries + 1):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - `retryable` decides
            wait = retryable(err)
            if wait is None or attempt == settings.max_retries:
                raise LLMError(f"{type(err).__name__}: {err}") from err
            delay = max(wait, settings.backoff_s * 2 ** attempt * (0.5 + random.random() / 2))
            log.warning("LLM call failed (%s), retry %d/%d in %.1f s", err, attempt + 1, settings.max_retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class OpenAICompatibleLLM:
    """Any endpoint speaking OpenAI's /chat/completions; the key comes from the environment."""

    def __init__(self, settings: LLMSettings):
        self.settings = settings
        self.url = settings.base_url.rstrip("/") + "/chat/completions"

    count_tokens = staticmethod(estimated_tokens)

    def headers(self) -> dict[str, str]:
        """JSON content type, and the key from llm.api_key_env as a bearer token when it is set."""
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.settings.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def chat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None,
             schema: dict | None = None) -> Completion:
        body = json.dumps(chat_body(self.settings, messages, max_tokens, temperature, schema)).encode()
        headers = self.headers()

        def post() -> dict:
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                return json.loads(response.read())

        started = time.perf_counter()
        reply = _with_retries(post, self.settings, _http_retry_after)
        usage = reply.get("usage") or {}
        return Completion(reply["choices"][0]["message"]["content"], int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)), time.perf_counter() - started,
                          reply.get("model", self.settings.model))

    def stream(self, messages: Messages, max_tokens: int | None = None,
               temperature: float | None = None) -> Iterator[str | Completion]:
        """Server-sent chat-completion chunks (`"stream": true`), read line by line."""
        body = chat_body(self.settings, messages, max_tokens, temperature, stream=True)
        body["stream_options"] = {"include_usage": True}
        started = time.perf_counter()
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=self.headers(), method="POST")
        response = _with_retries(lambda: urllib.request.urlopen(request, timeout=self.settings.timeout_s),
                                 self.settings, _http_retry_after)
        pieces, usage = [], {}
        with response:
            if "text/event-stream" not in (response.headers.get("Content-Type") or ""):
                # an endpoint that ignores "stream" answers with one whole completion
                reply = json.loads(response.read())
                usage = reply.get("usage") or {}
                text = reply["choices"][0]["message"]["content"]
                yield text
                yield Completion(text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                                 time.perf_counter() - started, reply.get("model", self.settings.model))
                return
            for line in response:
                line = line.decode("utf-8").strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        pieces.append(piece)
                        yield piece
        yield Completion("".join(pieces), int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                         time.perf_counter() - started, self.settings.model)


def _http_retry_after(err: Exception) -> float | None:
    """Seconds to wait before retrying, or None when retrying cannot help (4xx but 408/429)."""
    if isinstance(err, urllib.error.HTTPError):
        if err.code in (408, 429) or err.code >= 500:
            return float(err.headers.get("Retry-After") or 0)
        return None
    return 0.0 if isinstance(err, (urllib.error.URLError, TimeoutError, ConnectionError)) else None


class DatabricksLLM:
    """A Databricks model serving endpoint through mlflow.deployments (chat format)."""

    def __init__(self, settings: LLMSettings, client: Any = None):
        self.settings = settings
        if client is None:
            from mlflow.deployments import get_deploy_client

            client = get_deploy_client("databricks")
        self.client = client

    count_tokens = staticmethod(estimated_tokens)

    def chat(self, messages: Messages, max_tokens: int | None = None, temperature: float | None = None,
             schema: dict | None = None) -> Completion:
        inputs = {"messages": messages, "max_tokens": max_tokens or self.settings.max_new_tokens,
                  "temperature": self.settings.temperature if temperature is None else temperature}
        if schema is not None:
            inputs["response_format"] = response_format(schema)
        started = time.perf_counter()
        reply = _with_retries(lambda: self.client.predict(endpoint=self.settings.model, inputs=inputs),
                              self.settings, lambda err: 0.0 if "429" in str(err) or "503" in str(err) else None)
        usage = reply.get("usage") or {}
        return Completion(reply["choices"][0]["message"]["content"], int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)), time.perf_counter() - started, self.settings.model)

    def stream(self, messages: Messages, max_tokens: int | None = None,
               temperature: float | None = None) -> Iterator[str | Completion]:
        """The whole answer as one piece (mlflow.deployments' predict does not stream)."""
        return _whole(self, messages, max_tokens, temperature)


def make_llm(settings: LLMSettings) -> LLM:
    """The backend `settings.backend` names."""
    if settings.backend == "llamacpp":
        return LlamaCppLLM(settings)
    if settings.backend == "transformers":
        return TransformersLLM(settings)
    if settings.backend == "openai":
        return OpenAICompatibleLLM(settings)
    return DatabricksLLM(settings)


def model_key(settings: Settings) -> str:
    """How rows name the LLM that wrote them (summaries, questions, judgments): backend:model."""
    return f"{settings.llm.backend}:{settings.llm.model}"
