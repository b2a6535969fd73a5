"""The RAG chain: chat messages in -> standalone query -> retrieval -> passages within a token
budget -> prompt -> LLM (streamed) -> every sentence checked against the sources -> answer with
verified citations, contexts and token usage out. Plain Python: the MLflow model, the REST
endpoint and the batch job all wrap `RagChain.stream` / `RagChain.answer`.

Retrieved passages enter the prompt as numbered, quoted blocks, and the system prompt says they
are data, not instructions. The chain abstains (says it does not know and lists the closest
sources) when retrieval finds nothing close enough or no answer sentence is supported. Nothing
about a conversation is stored: the client sends the history with every request, and the chain
keeps only what `chain.history_tokens` allows.
"""
from __future__ import annotations

import dataclasses
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from lakerag.access.identity import TRACE_USER, Identity
from lakerag.chain.citations import SentenceVerdict, cited_answer, source_sentences, verify
from lakerag.chain.llm import LLM, Completion, MalformedOutput, Messages, json_in
from lakerag.markdown_tables import is_table
from lakerag.retrieval.retriever import Filters, Hit, Retriever
from lakerag.settings import ChainSettings

ROLES = ("system", "user", "assistant")
QUOTE = '"""'
DECOMPOSE_SCHEMA = {"type": "array", "items": {"type": "string", "minLength": 5, "maxLength": 300},
                    "minItems": 1, "maxItems": 5}


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


@dataclass
class Passage:
    """What the prompt shows of one retrieved section: some of its paragraphs, with their pages."""

    number: int  # the source's number in the prompt
    hit: Hit
    paragraphs: list[tuple[int, str, int]]  # (position in the section, text, page), in order

    def text(self) -> str:
        """The paragraphs in document order (a contiguous run: they grow outward from the match)."""
        return "\n\n".join(text for _, text, _ in self.paragraphs)

    def block(self) -> str:
        """The numbered, quoted source block of the prompt, headed by file, page and section title
        (the full citation is for readers: it would cost the model 30 tokens a source to read)."""
        pages = f"p. {self.hit.page_start}" + (f"-{self.hit.page_end}" if self.hit.page_end != self.hit.page_start else "")
        title = self.hit.heading_path[-1] if self.hit.heading_path else self.hit.title
        # A section a link pulled in says so: the model then reads it as the referenced part.
        via = f' (referred to as "{quote(self.hit.via.text)}")' if self.hit.via and self.hit.via.text else ""
        return f"[{self.number}] {self.hit.file_name}, {pages}: {title}{via}\n{QUOTE}\n{quote(self.text())}\n{QUOTE}"


def section_paragraphs(hit: Hit) -> list[tuple[str, int]]:
    """(paragraph, page) of the hit's section; the section's first page where pages are unknown."""
    paragraphs = hit.section_text.split("\n\n")
    pages = hit.paragraph_pages if len(hit.paragraph_pages) == len(paragraphs) else [hit.page_start] * len(paragraphs)
    return list(zip(paragraphs, pages))


def anchor_paragraph(hit: Hit, paragraphs: list[tuple[str, int]]) -> int:
    """The paragraph where the matching chunk starts (the first one when a summary matched)."""
    if hit.kind != "chunk":
        return 0
    head = " ".join(hit.text.split()[:12])
    for position, (paragraph, _) in enumerate(paragraphs):
        if head and head in " ".join(paragraph.split()):
            return position
    return 0


def fitting_sentences(text: str, budget: int, count_tokens) -> str:
    """The leading sentences of `text` that fit in `budget` tokens ("" when none does)."""
    kept = ""
    for match in SENTENCE.finditer(text):
        candidate = text[: match.end()]
        if count_tokens(candidate) > budget:
            break
        kept = candidate
    return kept.strip()


def select_passages(hits: list[Hit], budget: int, count_tokens) -> list[Passage]:
    """Fill `budget` tokens with the hits' best paragraphs: each hit's matching paragraph first
    (best hit first), then their neighbours, nearest first, round by round. A hit whose first
    paragraph does not fit gets its leading sentences that do, or the whole of it when it is a
    table (a table cut into rows is no table); hits that get nothing are left out."""
    plans = []
    for hit in hits:
        paragraphs = section_paragraphs(hit)
        anchor = anchor_paragraph(hit, paragraphs)
        order = [anchor] + [p for step in range(1, len(paragraphs))
                            for p in (anchor + step, anchor - step) if 0 <= p < len(paragraphs)]
        plans.append({"paragraphs": paragraphs, "order": order, "chosen": {}})
    active = [i for i, plan in enumerate(plans) if plan["order"]]
    while active and budget > 0:
        for i in list(active):
            plan = plans[i]
            position = plan["order"].pop(0)
            text, page = plan["paragraphs"][position]
            cost = count_tokens(text)
            if cost > budget and is_table(text) and not plan["chosen"]:
                plan["order"] = []  # a table is whole or absent: as the hit's own passage, whole
            elif cost > budget:
                text = fitting_sentences(text, budget, count_tokens) if not plan["chosen"] else ""
                cost = count_tokens(text) if text else 0
                plan["order"] = []  # this section's share ends here
            if text.strip():
                plan["chosen"][position] = (text, page)
                budget -= cost
            if not plan["order"]:
                active.remove(i)
    passages = []
    for hit, plan in zip(hits, plans):
        if plan["chosen"]:
            paragraphs = [(position, *plan["chosen"][position]) for position in sorted(plan["chosen"])]
            passages.append(Passage(len(passages) + 1, hit, paragraphs))
    return passages


def citation_record(number: int, hit: Hit) -> dict[str, Any]:
    """What an answer says about one source: document, file, pages, section path."""
    return {"source": number, "title": hit.title, "file_name": hit.file_name, "doc_id": hit.doc_id,
            "section_id": hit.section_id, "section": " > ".join(hit.heading_path),
            "page_start": hit.page_start, "page_end": hit.page_end, "citation": hit.citation()}


def verified_citations(passages: list[Passage], verdicts: list[SentenceVerdict]) -> list[dict[str, Any]]:
    """One record per source that supports a sentence, in source order: where it is, the page and
    quoted span of each sentence it supports."""
    quotes: dict[int, list[dict[str, Any]]] = {}
    for verdict in verdicts:
        if verdict.supported:
            quotes.setdefault(verdict.source, [])
            if all(q["quote"] != verdict.quote for q in quotes[verdict.source]):
                quotes[verdict.source].append({"page": verdict.page, "quote": verdict.quote})
    return [citation_record(p.number, p.hit) | {"page": quotes[p.number][0]["page"], "quotes": quotes[p.number]}
            for p in passages if p.number in quotes]


def retrieved_document(hit: Hit) -> dict[str, Any]:
    """A hit in MLflow's retriever-span shape (page_content, metadata, id)."""
    return {"id": hit.chunk_id, "page_content": hit.text,
            "metadata": {"doc_uri": hit.file_name, "section_id": hit.section_id, "doc_id": hit.doc_id,
                         "citation": hit.citation(), "page_start": hit.page_start, "page_end": hit.page_end,
                         "score": hit.score, "relevance": round(hit.relevance, 4), "kind": hit.kind,
                         "via": hit.via.record() if hit.via else None}}


def audit(identity: Identity, hits: list[Hit]) -> None:
    """Record on the current trace who asked (MLflow's standard user metadata), the groups they
    read as, and the documents the retrieved sources came from."""
    import mlflow

    mlflow.update_current_trace(
        metadata={TRACE_USER: identity.user},
        tags={"lakerag.groups": ",".join(identity.groups),
              "lakerag.documents": ",".join(sorted({hit.doc_id for hit in hits})),
              "lakerag.files": ",".join(sorted({hit.file_name for hit in hits}))})


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


class RagChain:
    """Retriever + reranker + prompt + LLM + chat memory."""

    def __init__(self, retriever: Retriever, llm: LLM, settings: ChainSettings):
        self.retriever, self.llm, self.settings = retriever, llm, settings

    def count_tokens(self, text: str) -> int:
        """Tokens by the LLM's tokenizer (an estimate for remote backends)."""
        return self.llm.count_tokens(text)

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

    def prompt(self, question: str, passages: list[Passage], recent: Messages, summary: str) -> Messages:
        """The fixed system prompt first (so llama.cpp's prompt cache reuses it), then the summary
        of older turns, recent turns, the sources and the question."""
        messages = [{"role": "system", "content": self.settings.system_prompt}]
        if summary:
            messages.append({"role": "user", "content": f"Earlier in this conversation: {summary}"})
            messages.append({"role": "assistant", "content": "Noted."})
        sources = "\n\n".join(passage.block() for passage in passages)
        user = self.settings.user_prompt.format(sources=sources or "(no sources found)", question=question)
        return [*messages, *recent, {"role": "user", "content": user}]

    def screen(self, hit: Hit) -> tuple[Hit, int]:
        """A hit with instruction-like sentences screened out of everything of it the prompt
        shows (section text, document title, headings), and how many were removed."""
        patterns = self.settings.injection_patterns
        (text, in_text), (title, in_title) = (screen_instructions(hit.section_text, patterns),
                                              screen_instructions(hit.title, patterns))
        headings = [screen_instructions(heading, patterns) for heading in hit.heading_path]
        # the words of the link that pulled the section in are the PDF's too
        via, in_via = (screen_instructions(hit.via.text, patterns) if hit.via else ("", 0))
        removed = in_text + in_title + sum(n for _, n in headings) + in_via
        return dataclasses.replace(hit, section_text=text, title=title, heading_path=[h for h, _ in headings],
                                   via=dataclasses.replace(hit.via, text=via) if hit.via else None), removed

    @contextmanager
    def span(self, name: str, kind: str, inputs: dict[str, Any]) -> Iterator[Any]:
        """An MLflow trace span (the root of a new trace when none is active)."""
        import mlflow

        with mlflow.start_span(name=name, span_type=kind) as span:
            span.set_inputs(inputs)
            yield span

    def decompose(self, question: str, usage: Usage) -> list[str]:
        """Sub-questions to look up (at most chain.max_steps); the question itself when the model
        gives no usable list."""
        prompt = self.settings.decompose_prompt.format(question=question, max_steps=self.settings.max_steps)
        reply = usage.add(self.llm.chat([{"role": "user", "content": prompt}], max_tokens=160,
                                        schema=DECOMPOSE_SCHEMA))
        try:
            steps = [s.strip() for s in json_in(reply, list) if isinstance(s, str) and s.strip()]
        except MalformedOutput:
            steps = []
        return steps[: self.settings.max_steps] or [question]

    def retrieve(self, query: str, filters: Filters, usage: Usage) -> tuple[list[Hit], list[dict[str, Any]]]:
        """One-hop: the k best sections for the query. Multi-hop: the union of the k best for each
        sub-question, interleaved so each sub-question's best come first; each step is traced.
        Returns the hits and the steps taken (sub-question and the sections it found)."""
        def search(step: str, name: str = "retrieve") -> list[Hit]:
            with self.span(name, "RETRIEVER", {"query": step, "k": self.settings.k}) as span:
                hits = self.retriever.search(step, k=self.settings.k, mode=self.settings.mode, filters=filters,
                                             rerank=self.settings.rerank)
                span.set_outputs([retrieved_document(hit) for hit in hits])
            return hits

        if not self.settings.multi_hop:
            return self.follow_links(query, search(query), filters), []
        with self.span("decompose", "CHAIN", {"question": query}) as span:
            questions = self.decompose(query, usage)
            span.set_outputs({"sub_questions": questions})
        found = [search(step, f"retrieve {number}") for number, step in enumerate(questions, 1)]
        hits: list[Hit] = []
        for rank in range(max(map(len, found), default=0)):
            for step_hits in found:
                if rank < len(step_hits) and all(h.section_id != step_hits[rank].section_id for h in hits):
                    hits.append(step_hits[rank])
        steps = [{"question": q, "section_ids": [h.section_id for h in step_hits]} for q, step_hits in zip(questions, found)]
        return self.follow_links(query, hits, filters), steps

    def follow_links(self, query: str, hits: list[Hit], filters: Filters) -> list[Hit]:
        """The hits, then up to chain.follow_links sections the best hit links to or names ("see
        Section 7.2") that were not retrieved: multi-hop along the documents' own references,
        with no LLM call; they get context only where chain.context_tokens leaves room."""
        if not self.settings.follow_links or not hits:
            return hits
        with self.span("follow links", "RETRIEVER", {"section_id": hits[0].section_id}) as span:
            linked = self.retriever.linked(query, hits[0], self.settings.follow_links, filters,
                                           exclude={hit.section_id for hit in hits})
            span.set_outputs([retrieved_document(hit) for hit in linked])
        return hits + linked

    def stream(self, messages: Any, filters: Filters = Filters(),
               identity: Identity | None = None) -> Iterator[dict[str, Any]]:
        """Chat messages (last one the user's question) -> {"delta": text} events while the LLM
        writes, then one {"result": answer} event: the checked answer, verified citations,
        sentences with their verdicts, contexts, usage. With `identity`, only documents its
        groups may read are searched, and the trace records who asked."""
        started = time.perf_counter()
        if identity is not None:
            filters = dataclasses.replace(filters, groups=identity.groups)
        messages = validate_messages(messages, self.settings)
        question = messages[-1]["content"]
        # Client-sent system messages are not trusted as instructions: only our prompt is.
        history = [m for m in messages[:-1] if m["role"] != "system"]
        usage = Usage()
        first_token_s = None
        with self.span("rag chain", "CHAIN", {"messages": messages}) as root:
            # Memory first: the rewrite then sees only the turns that fit history_tokens.
            recent, summary = self.memory(history, usage)
            query = self.standalone_query(recent, question, usage, summary)
            hits, steps = self.retrieve(query, filters, usage)
            hits, screened = zip(*(self.screen(hit) for hit in hits)) if hits else ((), ())
            passages = select_passages(list(hits), self.settings.context_tokens, self.count_tokens)
            draft, verdicts = "", []
            # Nothing close enough: abstain without asking the LLM to invent from neighbours.
            if passages and max(p.hit.relevance for p in passages) >= self.settings.min_relevance:
                prompt = self.prompt(question, passages, recent, summary)
                with self.span("answer", "CHAT_MODEL", {"messages": prompt}) as span:
                    for piece in self.llm.stream(prompt, max_tokens=self.settings.max_new_tokens):
                        if isinstance(piece, Completion):
                            draft = usage.add(piece)
                            span.set_attribute("mlflow.chat.tokenUsage", {
                                "input_tokens": piece.prompt_tokens, "output_tokens": piece.completion_tokens,
                                "total_tokens": piece.prompt_tokens + piece.completion_tokens})
                        else:
                            if first_token_s is None:
                                first_token_s = time.perf_counter() - started
                                span.set_attribute("first_token_s", round(first_token_s, 3))
                            yield {"delta": piece}
                    span.set_outputs({"choices": [{"message": {"role": "assistant", "content": draft}}]})
                sentences = [s for p in passages for s in source_sentences(p.number, [(t, page) for _, t, page in p.paragraphs])]
                verdicts = verify(draft, sentences, self.retriever.embed, self.settings.citations, len(passages))
            result = self.result(question, query, draft, verdicts, passages, list(hits), list(screened), steps, usage)
            result["index"] = self.retriever.version
            result["trace_id"] = root.trace_id
            if identity is not None:
                result["user"] = identity.user
                audit(identity, list(hits))
            root.set_attribute("index", result["index"])
            root.set_outputs({"answer": result["answer"], "abstained": result["abstained"],
                              "retrieved": result["retrieved"],
                              "citations": [c["citation"] for c in result["citations"]]})
        result["first_token_s"] = round(first_token_s, 3) if first_token_s is not None else None
        result["latency_s"] = round(time.perf_counter() - started, 3)
        yield {"result": result}

    def result(self, question: str, query: str, draft: str, verdicts: list[SentenceVerdict], passages: list[Passage],
               hits: list[Hit], screened: list[int], steps: list[dict[str, Any]], usage: Usage) -> dict[str, Any]:
        """The answer record: the checked answer (or an abstention), citations, sentences, contexts."""
        supported = [v for v in verdicts if v.supported]
        abstained = not supported
        removed = dict(zip((h.section_id for h in hits), screened))
        return {
            "answer": self.settings.abstain_answer if abstained else cited_answer(draft, verdicts),
            "abstained": abstained,
            "draft": draft,  # what the model wrote, before the check
            "citations": [] if abstained else verified_citations(passages, verdicts),
            # the closest sources, for a reader to look at when the chain abstains
            "closest_sources": [citation_record(p.number, p.hit) for p in passages] if abstained else [],
            "sentences": [v.record() for v in verdicts],
            "query": query,
            "retrieved": [h.section_id for h in hits],  # every retrieved section, best first
            "contexts": [{"source": p.number, "section_id": p.hit.section_id, "file_name": p.hit.file_name,
                          "section": " > ".join(p.hit.heading_path),
                          "chunk_id": p.hit.chunk_id, "kind": p.hit.kind, "score": p.hit.score,
                          "relevance": round(p.hit.relevance, 4), "text": p.text(),
                          "via": p.hit.via.record() if p.hit.via else None,
                          "instructions_removed": removed.get(p.hit.section_id, 0)}
                         for p in passages],
            "steps": steps,
            "usage": usage.record(),
        }

    def answer(self, messages: Any, filters: Filters = Filters(), identity: Identity | None = None) -> dict[str, Any]:
        """The whole answer at once (the last event of `stream`)."""
        for event in self.stream(messages, filters, identity):
            if "result" in event:
                return event["result"]
        raise AssertionError("the stream ended without a result")
