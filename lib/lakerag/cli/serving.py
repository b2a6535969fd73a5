"""Commands that serve a registered chain: serve (REST endpoint and chat page), serve-batch."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from lakerag.cli.common import add_common, add_mlflow, mlflow_experiment, add_model, model_uri_of, engine_task

log = logging.getLogger("lakerag")


def _serve(args: argparse.Namespace) -> int:
    """Serve a registered chain over HTTP until interrupted."""
    from lakerag.access.identity import Authenticator, UnsafeBind
    from lakerag.lakehouse.engine import Lakehouse
    from lakerag.lakehouse.tables import ACTIVE, BRONZE_DOCUMENTS
    from lakerag.serving.documents import PdfStore
    from lakerag.serving.server import serve
    from lakerag.settings import load_settings

    settings = load_settings(args.conf, args.overrides)
    try:
        auth = Authenticator.from_settings(settings.access)
    except (OSError, ValueError) as err:  # no users file, or a malformed one
        print(f"lakerag serve: {err}", file=sys.stderr)
        return 2
    mlflow_experiment(args)  # traces and feedback go to this experiment
    bronze = Lakehouse(args.catalog, args.schema, args.lake_root).location(BRONZE_DOCUMENTS.name)
    pdfs = PdfStore(bronze, ACTIVE) if Path(bronze).is_dir() else None
    if pdfs is None:
        log.warning("no bronze table at %s: the chat page cannot open cited PDFs", bronze)
    try:
        serve(model_uri_of(args), settings.chain, args.host, args.port, pdfs, auth)  # checks the bind first
    except UnsafeBind as err:
        print(f"lakerag serve: {err}", file=sys.stderr)
        return 2
    return 0


def _add_user(args: argparse.Namespace) -> int:
    """Add a user with a new token to the users file and print the token once."""
    from lakerag.access.identity import add_user

    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    token = add_user(args.users_file, args.user, groups)
    print(f"added {args.user} (groups: {', '.join(groups) or 'none besides users'}) to {args.users_file}")
    print(f"token (shown once; only its SHA-256 is stored): {token}")
    return 0


def _serve_batch(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.lakehouse.batch_serving import run_batch
    from lakerag.tracking import configure_mlflow

    configure_mlflow(args.tracking_uri, args.registry_uri, args.lake_root)
    started = time.perf_counter()
    report = run_batch(spark, lakehouse, model_uri_of(args), settings.access)
    log.info("batch done in %.1f s", time.perf_counter() - started)
    print(f"model version {report.model_version}: answered {report.answered}, failed {report.failed}, "
          f"already answered {report.skipped}")
    return 0


def add_commands(tasks: argparse._SubParsersAction) -> None:
    """Add the serving commands to the `lakerag` parser."""
    server = tasks.add_parser(
        "serve", help="serve a registered chain over HTTP: the chat page at /, POST /invocations, GET /health",
        description="Load the chain once and answer POST /invocations in MLflow's ResponsesAgent shape "
                    "({\"input\": [...], \"custom_inputs\": {\"filters\": [...]}}, \"stream\": true for "
                    "events), or the earlier {\"messages\": [...], \"filters\": [...]} and MLflow "
                    "dataframe_records / inputs shapes. Request limits come from chain.* in --conf. Every "
                    "request is traced to --experiment. The chat page at / asks the chain, lists each "
                    "answer's citations (opening the cited PDF page from bronze_documents under "
                    "--lake-root/--catalog/--schema), filters by the served index's documents and "
                    "sections, and stores thumbs up/down with a comment as feedback on the answer's trace. "
                    "Who asks: with access.users_file (or $LAKERAG_USERS_FILE) every data route needs "
                    "Authorization: Bearer <token> (the page asks for it); with access.proxy_user_header, a "
                    "proxy in access.trusted_proxies vouches; with neither, callers are anonymous and only "
                    "loopback addresses are served. Callers see only documents their groups may read "
                    "(access.rules).")
    where = add_common(server, engine=False)
    add_mlflow(where)
    add_model(where, alias="champion")
    where.add_argument("--model", default=None, help="any MLflow model URI (overrides --model-name/--alias)")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    server.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    server.set_defaults(runner=_serve)

    users = tasks.add_parser(
        "add-user", help="add a user and their groups to the users file; prints a new bearer token",
        description="Write USER with GROUPS and the SHA-256 of a new random token into the users file that "
                    "access.users_file (or $LAKERAG_USERS_FILE) names; the token is printed once. Running it "
                    "again for the same user replaces their token and groups. Every user also belongs to the "
                    "group users (the default group of documents no access.rules prefix matches).")
    users.add_argument("--users-file", required=True, help="the users file (created, readable by its owner only)")
    users.add_argument("--user", required=True, help="user name, e.g. alice@example.com")
    users.add_argument("--groups", default="", help="comma-separated groups, e.g. hr,legal")
    users.set_defaults(runner=_add_user)

    batch, where = engine_task(
        tasks, "serve-batch", _serve_batch,
        "answer the questions of serving_questions into serving_answers with a registered chain",
        "Load models:/<model-name>@<alias> (default alias champion) and answer every question of "
        "serving_questions that has no answer from that model version yet; answers (with citations, "
        "tokens and latency) or errors are merged into serving_answers by question_id. Each question is "
        "answered for the user its row names (groups from the users file; none: anonymous).",
    )
    add_mlflow(where)
    add_model(where, alias="champion")
    where.add_argument("--model", default=None, help="any MLflow model URI (overrides --model-name/--alias)")

