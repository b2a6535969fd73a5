"""Commands on the chain: search the index, register-chain, ask a registered chain."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from lakerag.cli.common import (
    add_common,
    add_index_root,
    add_mlflow,
    mlflow_experiment,
    add_model,
    model_name_of,
    model_uri_of,
    index_root_of,
)

log = logging.getLogger("lakerag")


def _search(args: argparse.Namespace) -> int:
    """Query the latest index: plain Python, no engine."""
    from lakerag.retrieval.index_files import latest_index
    from lakerag.retrieval.retriever import Filters, Retriever
    from lakerag.settings import load_settings

    settings = load_settings(args.conf, args.overrides)
    try:
        filters = Filters.parse(args.filter)
        if args.user:  # what this user would get; without --user the operator sees every document
            filters = dataclasses.replace(filters, groups=user_identity(settings, args.user).groups)
        folder = args.index or latest_index(index_root_of(args), settings)
    except (ValueError, LookupError, OSError) as err:
        print(f"lakerag search: {err}", file=sys.stderr)
        return 2
    retriever = Retriever.from_settings(folder, settings)
    hits = retriever.search(args.query, k=args.k, mode=args.mode, filters=filters, rerank=not args.no_rerank)
    if not hits:
        print("no hits")
    rank_of = {hit.section_id: rank for rank, hit in enumerate(hits, start=1)}
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank}. [{hit.score:.3f}] {hit.citation()}")
        if hit.via:  # graph retrieval pulled it in
            source = f"hit {rank_of[hit.via.section_id]}" if hit.via.section_id in rank_of else "a higher-ranked section"
            print(f"   (by a {hit.via.kind} from {source}: {hit.via.text!r})")
        print(f"   {' '.join(hit.text.split())[:300]}")
    return 0


def user_identity(settings, user: str):
    """`user`'s identity from the users file access.* names; LookupError/OSError saying what is missing."""
    from lakerag.access.identity import UserDirectory

    directory = UserDirectory.from_settings(settings.access)
    if directory is None:
        raise LookupError(f"--user {user}: no users file (set access.users_file or ${settings.access.users_env})")
    return directory.identity(user)


def _register_chain(args: argparse.Namespace) -> int:
    """Log, check, register the chain (reading the newest index under the index root) and set the
    alias: no engine needed."""
    from lakerag.chain.registry import register_chain
    from lakerag.retrieval.index_files import latest_index, vector_search_names
    from lakerag.settings import load_settings

    settings = load_settings(args.conf, args.overrides)
    # --index names one version folder; the chain follows the newest version beside it
    root = Path(args.index).resolve().parents[1] if args.index else index_root_of(args)
    retrieval = settings.retrieval
    if retrieval.backend == "vector_search":
        if not retrieval.vector_search_index:  # the index build-index syncs in this catalog and schema
            name = vector_search_names(settings.models.embedding, retrieval.strategy)[1]
            settings = dataclasses.replace(settings, retrieval=dataclasses.replace(
                retrieval, vector_search_index=f"{args.catalog}.{args.schema}.{name}"))
        where = f"Vector Search index {settings.retrieval.vector_search_index}"
    else:
        try:
            where = f"the newest index under {root} (now {latest_index(root, settings).name}), followed while it runs"
        except FileNotFoundError as err:
            print(f"lakerag register-chain: {err}", file=sys.stderr)
            return 2
    mlflow_experiment(args)
    started = time.perf_counter()
    done = register_chain(settings, root, model_name_of(args), args.alias, args.check_question)
    log.info("registered in %.1f s", time.perf_counter() - started)
    print(f"registered {done.name} version {done.version} as @{done.alias} (run {done.run_id}); it answers from "
          f"{where}")
    print(f"check question: {args.check_question}")
    _print_answer(done.check)
    return 0


def _print_answer(answer: dict) -> None:
    """The checked answer, its unsupported sentences, and the verified citations with quotes."""
    print(f"answer: {answer['answer']}")
    claims = [s for s in answer["sentences"] if s["claim"]]
    for sentence in claims:
        if not sentence["supported"]:
            print(f"  unsupported by the sources: {sentence['text']}")
    if answer["abstained"]:
        print("closest sources:" if answer["closest_sources"] else "no source was close enough")
        for citation in answer["closest_sources"]:
            print(f"  [{citation['source']}] {citation['citation']}")
    else:
        verified = sum(s["supported"] for s in claims)
        print(f"sources ({verified} of {len(claims)} sentences verified against them):")
        for citation in answer["citations"]:
            print(f"  [{citation['source']}] {citation['citation']}")
            for quoted in citation["quotes"]:
                print(f"      p. {quoted['page']}: \"{quoted['quote']}\"")
    index = answer.get("index") or {}
    print(f"index {index.get('version')} ({index.get('backend')}), trace {answer.get('trace_id')}")
    usage = answer["usage"]
    first = f", first token {answer['first_token_s']:.1f} s" if answer.get("first_token_s") is not None else ""
    print(f"({usage['prompt_tokens']} tokens in, {usage['completion_tokens']} out{first}, {answer['latency_s']:.1f} s)")


def _ask(args: argparse.Namespace) -> int:
    """Ask one question through a registered chain, printing the answer with citations."""
    from lakerag.chain.rag import BadRequest
    from lakerag.chain.registry import load_chain
    from lakerag.chain.responses import agent_request, answer_of
    from lakerag.settings import load_settings

    try:
        identity = user_identity(load_settings(args.conf, args.overrides), args.user) if args.user else None
    except (LookupError, OSError, ValueError) as err:
        print(f"lakerag ask: {err}", file=sys.stderr)
        return 2
    mlflow_experiment(args)  # the answer's trace goes to this experiment
    uri = model_uri_of(args)
    log.info("loading %s", uri)
    model = load_chain(uri)
    print(f"model: {uri}\nquestion: {args.question}")
    try:
        streaming = False
        request = agent_request([{"role": "user", "content": args.question}], args.filter, identity)
        for event in model.predict_stream(request):
            if event.get("type") == "response.output_text.delta":
                if not streaming:
                    print("draft: ", end="")
                    streaming = True
                print(event["delta"], end="", flush=True)
            elif event.get("type") == "response.output_item.done":
                answer = answer_of(event)
    except BadRequest as err:
        print(f"lakerag ask: {err}", file=sys.stderr)
        return 2
    if streaming:
        print("\n(checking each sentence against the sources)")
    _print_answer(answer)
    return 0


def add_commands(tasks: argparse._SubParsersAction) -> None:
    """Add the chain commands to the `lakerag` parser."""
    search = tasks.add_parser(
        "search",
        help="query the latest index and print ranked hits with citations",
        description="Search the latest index for --conf's model and strategy. Modes: dense, bm25, "
                    "hybrid (retrieval.fusion: weighted z-scores of both by default, or weighted reciprocal "
                    "rank fusion), then reranked (retrieval.reranker) unless --no-rerank. Hits are "
                    "sections (best chunk each) with title, file, pages and heading path.",
    )
    search.add_argument("query", help="the question or keywords")
    search.add_argument("-k", type=int, default=5, help="hits to print (default %(default)s)")
    search.add_argument("--mode", choices=("dense", "bm25", "hybrid"), default="hybrid")
    search.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="doc=ID, file=NAME, 'section=Title > Subtitle', pages=3-9, tag:language=en "
                             "(repeatable; all must hold)")
    search.add_argument("--no-rerank", action="store_true", help="skip retrieval.reranker")
    search.add_argument("--user", default=None,
                        help="search as this user of the users file (access.users_file): only documents "
                             "their groups may read (default: every document, the operator's view)")
    search.add_argument("--index", type=Path, default=None, help="an index folder (default: the latest)")
    add_index_root(add_common(search, engine=False))
    search.set_defaults(runner=_search)

    register = tasks.add_parser(
        "register-chain",
        help="log the RAG chain to MLflow, check it, register a version and set an alias",
        description="Log the chain (lakerag/chain_model.py, an MLflow model from code) with the "
                    "settings from --conf, the latest index as an artifact, the lakerag code, an "
                    "input example and a signature; reload the logged model and answer "
                    "--check-question; then register the version and point --alias at it.",
    )
    where = add_common(register, engine=False)
    add_index_root(where)
    add_mlflow(where)
    add_model(where, alias="challenger")
    register.add_argument("--index", type=Path, default=None,
                          help="an index version folder; the chain follows the newest version beside it "
                               "(default: the newest under --index-root). The index is not copied into the "
                               "model: the served chain reads it where it is and follows new versions "
                               "(retrieval.index_refresh_s)")
    register.add_argument("--check-question", default="How can I keep my Debian system current?",
                          help="question the reloaded model must answer before it is registered")
    register.set_defaults(runner=_register_chain)

    ask = tasks.add_parser("ask", help="ask a registered chain one question; prints the answer and citations",
                           description="Load models:/<model-name>@<alias> (or --model) and answer QUESTION.")
    ask.add_argument("question")
    ask.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                     help="metadata filter, as for search (repeatable)")
    ask.add_argument("--user", default=None,
                     help="ask as this user of the users file (access.users_file), with their groups "
                          "(default: anonymous, who reads the documents of group users only)")
    where = add_common(ask, engine=False)
    add_mlflow(where)
    add_model(where, alias="champion")
    where.add_argument("--model", default=None, help="any MLflow model URI (overrides --model-name/--alias)")
    ask.set_defaults(runner=_ask)
