"""One chat interface over three backends: a local transformers model, any OpenAI-compatible
HTTP endpoint, and Databricks serving endpoints (through mlflow.deployments).

Every call takes chat messages ([{"role": ..., "content": ...}]) and returns a Completion with
the text, token counts and latency, so callers can log what a run cost.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from lakerag.models import llm_path
from lakerag.settings import LLMSettings

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
    """A chat model: messages in, a Completion out."""

    def chat(self, messages: Messages, max_tokens: int | None = None,
             temperature: float | None = None) -> Completion: ...


class LLMError(RuntimeError):
    """A backend failed for good (after retries, or with an error retrying cannot fix)."""


def _dequantised_copy(gguf: Path) -> Path:
    """Where the fp32 transformers copy of a .gguf file is kept (keyed by name, size, mtime)."""
    from lakerag.models import model_cache

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


class LocalLLM:
    """A transformers causal LM on the CPU with its chat template; greedy unless temperature > 0."""

    def __init__(self, settings: LLMSettings):
        self.settings = settings
        self.path = llm_path(settings.model)
        self.tokenizer, self.model = _load_local(str(self.path))

    def chat(self, messages: Messages, max_tokens: int | None = None,
             temperature: float | None = None) -> Completion:
        import torch

        temperature = self.settings.temperature if temperature is None else temperature
        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(self.settings.seed)
            sampling = {"do_sample": True, "temperature": temperature}
        started = time.perf_counter()
        with torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_tokens or self.settings.max_new_tokens,
                                         pad_token_id=self.tokenizer.eos_token_id, **sampling)
        prompt_tokens = inputs["input_ids"].shape[1]
        generated = output[0, prompt_tokens:]
        return Completion(self.tokenizer.decode(generated, skip_special_tokens=True).strip(), int(prompt_tokens),
                          int(generated.shape[0]), time.perf_counter() - started, self.settings.model)


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

    def request_body(self, messages: Messages, max_tokens: int | None, temperature: float | None) -> dict:
        """The JSON body we send: model, messages, temperature, max_tokens (and seed)."""
        return {"model": self.settings.model, "messages": messages,
                "temperature": self.settings.temperature if temperature is None else temperature,
                "max_tokens": max_tokens or self.settings.max_new_tokens, "seed": self.settings.seed}

    def chat(self, messages: Messages, max_tokens: int | None = None,
             temperature: float | None = None) -> Completion:
        body = json.dumps(self.request_body(messages, max_tokens, temperature)).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.settings.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"

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

    def chat(self, messages: Messages, max_tokens: int | None = None,
             temperature: float | None = None) -> Completion:
        inputs = {"messages": messages, "max_tokens": max_tokens or self.settings.max_new_tokens,
                  "temperature": self.settings.temperature if temperature is None else temperature}
        started = time.perf_counter()
        reply = _with_retries(lambda: self.client.predict(endpoint=self.settings.model, inputs=inputs),
                              self.settings, lambda err: 0.0 if "429" in str(err) or "503" in str(err) else None)
        usage = reply.get("usage") or {}
        return Completion(reply["choices"][0]["message"]["content"], int(usage.get("prompt_tokens", 0)),
                          int(usage.get("completion_tokens", 0)), time.perf_counter() - started, self.settings.model)


def make_llm(settings: LLMSettings) -> LLM:
    """The backend `settings.backend` names."""
    if settings.backend == "local":
        return LocalLLM(settings)
    if settings.backend == "openai":
        return OpenAICompatibleLLM(settings)
    return DatabricksLLM(settings)
