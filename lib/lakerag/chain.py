"""The RAG chain: chat messages in -> standalone query -> retrieval -> prompt -> LLM -> answer
with citations, contexts and token usage out. Plain Python: the MLflow model, the REST
endpoint and the batch job all wrap `RagChain.answer`.

Retrieved sections enter the prompt as numbered, quoted blocks, and the system prompt says they
are data, not instructions. Nothing about a conversation is stored: the client sends the history
with every request, and the chain keeps only what `chain.history_tokens` allows.
"""
from __future__ import annotations

import dataclasses
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from lakerag.llm import LLM, MalformedOutput, Messages, json_in
from lakerag.retriever import Filters, Hit, Retriever
from lakerag.settings import ChainSettings

ROLES = ("system", "user", "assistant")
QUOTE = '"""'


class BadRequest(ValueError):
    """A request the chain refuses, with a message that says what to fix."""


def validate_messages(messages: Any, limits: ChainSettings) -> Messages:
    """OpenAI-style chat messages -> a clean list of {role, content}; raises BadRequest."""
    if not isinstance(messages, (list, tuple)):
        raise BadRequest('"messages" must be a list of {"role": ..., "content": ...} objects')
    messages = list(messages)
    if not messages:
        raise BadRequest('"messages" is empty: send at least one {"role": "user", "content": "..."}')
    if len(messages) > limits.max_messages:
        raise BadRequest(f'too many messages: {len(messages)} > {limits.max_messages} (chain.max_messages); '
                         "send only the recent turns")
    clean: Messages = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(
                message.get("content"), str):
            raise BadRequest(f"message {position}: expected {{\"role\": one of {list(ROLES)}, \"content\": a string}}")
        if len(message["content"]) > limits.max_message_chars:
            raise BadRequest(f"message {position} has {len(message['content'])} characters, more than "
                             f"{limits.max_message_chars} (chain.max_message_chars)")
        clean.append({"role": message["role"], "content": message["content"]})
    if clean[-1]["role"] != "user" or not clean[-1]["content"].strip():
        raise BadRequest("the last message must be a non-empty user question")
    return clean


def quote(text: str) -> str:
    """Text safe to put between triple quotes: a source cannot close its own block (any run of
    three or more quotes becomes one)."""
    return re.sub(r'"{3,}', '"', text)


REMOVED_INSTRUCTION = "[instruction removed]"
SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+[\"')\]]*|\n|$)")


@lru_cache(maxsize=8)
def _injection_regex(patterns: tuple[str, ...]) -> re.Pattern | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE) if patterns else None


def screen_instructions(text: str, patterns: tuple[str, ...]) -> tuple[str, int]:
    """Source text -> (text with each sentence that reads as an instruction to the assistant
    replaced by a marker, how many were replaced). A prompt-injection defence: see README."""
    regex = _injection_regex(tuple(patterns))
    if regex is None:
        return text, 0
    removed = 0

    def screen(match: re.Match) -> str:
        nonlocal removed
        sentence = match.group(0)
        if not regex.search(sentence):
            return sentence
        removed += 1
        lead = sentence[: len(sentence) - len(sentence.lstrip())]
        return lead + REMOVED_INSTRUCTION + ("\n" if sentence.endswith("\n") else "")

    return SENTENCE.sub(screen, text), removed


def source_block(number: int, hit: Hit, max_chars: int) -> str:
    """One numbered, quoted source for the prompt."""
    text = hit.section_text if len(hit.section_text) <= max_chars else hit.section_text[:max_chars] + " ..."
    return f"[{number}] {hit.citation()}\n{QUOTE}\n{quote(text)}\n{QUOTE}"


def cited_numbers(answer: str, sources: int) -> list[int]:
    """Source numbers the answer cites as [n] (also [1, 2] and [1][2]), in order, no repeats."""
    found: list[int] = []
    for group in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", answer):
        for number in (int(n) for n in group.split(",")):
            if 1 <= number <= sources and number not in found:
                found.append(number)
    return found


def citation_record(number: int, hit: Hit) -> dict[str, Any]:
    """What an answer says about one source: document, file, pages, section path."""
    return {"source": number, "title": hit.title, "file_name": hit.file_name, "doc_id": hit.doc_id,
            "section_id": hit.section_id, "section": " > ".join(hit.heading_path),
            "page_start": hit.page_start, "page_end": hit.page_end, "citation": hit.citation()}


def transcript(messages: Messages) -> str:
    """History as 'User: ...' / 'Assistant: ...' lines."""
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


@dataclass
class Usage:
    """Tokens and calls over every LLM call of one answer."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0

    def add(self, completion) -> str:
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.llm_calls += 1
        return completion.text.strip()

    def record(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens, "llm_calls": self.llm_calls}


class _NoSpan:
    """Stands in for a trace span when tracing is off."""

    def set_outputs(self, outputs: Any) -> None:
        pass


class RagChain:
    """Retriever + reranker + prompt + LLM + chat memory."""

    def __init__(self, retriever: Retriever, llm: LLM, settings: ChainSettings):
        self.retriever, self.llm, self.settings = retriever, llm, settings

    def count_tokens(self, text: str) -> int:
        """Tokens by the LLM's tokenizer when it has one, else about four characters a token."""
        tokenizer = getattr(self.llm, "tokenizer", None)
        return len(tokenizer.encode(text)) if tokenizer is not None else len(text) // 4 + 1

    def standalone_query(self, history: Messages, question: str, usage: Usage, summary: str = "") -> str:
        """The question rewritten to stand alone given the recent turns and the summary of older
        ones (unchanged without history)."""
        if not (history or summary) or not self.settings.rewrite_followups:
            return question
        earlier = f"(Earlier: {summary})\n" if summary else ""
        prompt = self.settings.rewrite_prompt.format(history=earlier + transcript(history), question=question)
        rewritten = usage.add(self.llm.chat([{"role": "user", "content": prompt}], max_tokens=64))
        rewritten = rewritten.splitlines()[0].strip().strip('"') if rewritten else ""
        return rewritten or question

    def memory(self, history: Messages, usage: Usage) -> tuple[Messages, str]:
        """(recent turns within history_tokens, summary of the older ones or "")."""
        kept: Messages = []
        budget = self.settings.history_tokens
        for message in reversed(history):
            budget -= self.count_tokens(message["content"])
            if budget < 0:
                break
            kept.insert(0, message)
        older = history[: len(history) - len(kept)]
        if not older or self.settings.memory == "window":
            return kept, ""
        prompt = self.settings.memory_prompt.format(history=transcript(older))
        return kept, usage.add(self.llm.chat([{"role": "user", "content": prompt}], max_tokens=120))

    def prompt(self, question: str, hits: list[Hit], recent: Messages, summary: str) -> Messages:
        """System prompt (+ summary of older turns), recent turns, then sources and the question."""
        system = self.settings.system_prompt
        if summary:
            system += f"\n\nEarlier in this conversation: {summary}"
        sources = "\n\n".join(source_block(n, hit, self.settings.max_source_chars) for n, hit in enumerate(hits, 1))
        user = self.settings.user_prompt.format(sources=sources or "(no sources found)", question=question)
        return [{"role": "system", "content": system}, *recent, {"role": "user", "content": user}]

    def screen(self, hit: Hit) -> tuple[Hit, int]:
        """A hit with instruction-like sentences screened out of everything of it the prompt
        shows (section text, document title, headings), and how many were removed."""
        patterns = self.settings.injection_patterns
        (text, in_text), (title, in_title) = (screen_instructions(hit.section_text, patterns),
                                              screen_instructions(hit.title, patterns))
        headings = [screen_instructions(heading, patterns) for heading in hit.heading_path]
        removed = in_text + in_title + sum(n for _, n in headings)
        return dataclasses.replace(hit, section_text=text, title=title, heading_path=[h for h, _ in headings]), removed

    @contextmanager
    def span(self, name: str, kind: str, inputs: dict[str, Any]) -> Iterator[Any]:
        """An MLflow trace span in multi-hop mode (every step is traced), else a no-op span."""
        if not self.settings.multi_hop:
            yield _NoSpan()
            return
        import mlflow

        with mlflow.start_span(name=name, span_type=kind) as span:
            span.set_inputs(inputs)
            yield span

    def decompose(self, question: str, usage: Usage) -> list[str]:
        """Sub-questions to look up (at most chain.max_steps); the question itself when the model
        gives no usable list."""
        prompt = self.settings.decompose_prompt.format(question=question, max_steps=self.settings.max_steps)
        reply = usage.add(self.llm.chat([{"role": "user", "content": prompt}], max_tokens=160))
        try:
            steps = [s.strip() for s in json_in(reply, list) if isinstance(s, str) and s.strip()]
        except MalformedOutput:
            steps = []
        return steps[: self.settings.max_steps] or [question]

    def retrieve(self, query: str, filters: Filters, usage: Usage) -> tuple[list[Hit], list[dict[str, Any]]]:
        """One-hop: the k best sections for the query. Multi-hop: the union of the k best for each
        sub-question, interleaved so each sub-question's best come first; each step is traced.
        Returns the hits and the steps taken (sub-question and the sections it found)."""
        def search(step: str) -> list[Hit]:
            return self.retriever.search(step, k=self.settings.k, mode=self.settings.mode, filters=filters,
                                         rerank=self.settings.rerank)

        if not self.settings.multi_hop:
            return search(query), []
        with self.span("decompose", "CHAIN", {"question": query}) as span:
            questions = self.decompose(query, usage)
            span.set_outputs({"sub_questions": questions})
        found = []
        for number, step in enumerate(questions, 1):
            with self.span(f"retrieve {number}", "RETRIEVER", {"query": step}) as span:
                found.append(search(step))
                span.set_outputs([{"section_id": h.section_id, "citation": h.citation()} for h in found[-1]])
        hits: list[Hit] = []
        for rank in range(max(map(len, found), default=0)):
            for step_hits in found:
                if rank < len(step_hits) and all(h.section_id != step_hits[rank].section_id for h in hits):
                    hits.append(step_hits[rank])
        steps = [{"question": q, "section_ids": [h.section_id for h in step_hits]} for q, step_hits in zip(questions, found)]
        return hits, steps

    def answer(self, messages: Any, filters: Filters = Filters()) -> dict[str, Any]:
        """Chat messages (last one the user's question) -> answer, citations, contexts, usage."""
        started = time.perf_counter()
        messages = validate_messages(messages, self.settings)
        question = messages[-1]["content"]
        # Client-sent system messages are not trusted as instructions: only our prompt is.
        history = [m for m in messages[:-1] if m["role"] != "system"]
        usage = Usage()
        with self.span("rag chain", "CHAIN", {"messages": messages}) as root:
            # Memory first: the rewrite then sees only the turns that fit history_tokens.
            recent, summary = self.memory(history, usage)
            query = self.standalone_query(recent, question, usage, summary)
            hits, steps = self.retrieve(query, filters, usage)
            hits, screened = zip(*(self.screen(hit) for hit in hits)) if hits else ((), ())
            with self.span("answer", "LLM", {"question": question, "sources": len(hits)}) as span:
                answer = usage.add(self.llm.chat(self.prompt(question, hits, recent, summary),
                                                 max_tokens=self.settings.max_new_tokens))
                span.set_outputs({"answer": answer})
            root.set_outputs({"answer": answer})
        cited = cited_numbers(answer, len(hits))
        # A model that cites nothing still answered from all the sources it was given.
        used = cited or list(range(1, len(hits) + 1))
        return {
            "answer": answer,
            "citations": [citation_record(n, hits[n - 1]) for n in used],
            "cited_explicitly": bool(cited),
            "query": query,
            "contexts": [{"source": n, "section_id": h.section_id, "section": " > ".join(h.heading_path),
                          "chunk_id": h.chunk_id, "kind": h.kind, "score": h.score, "text": h.section_text,
                          "instructions_removed": removed}
                         for n, (h, removed) in enumerate(zip(hits, screened), 1)],
            "steps": steps,
            "usage": usage.record(),
            "latency_s": round(time.perf_counter() - started, 3),
        }
