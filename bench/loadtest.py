"""Load test: the REST endpoint under 16 concurrent clients sending a mix of valid and invalid
requests (loopback only), against the baseline of one client sending the same mix.

Serves the chain (real retriever and reranker on the index `make demo` built, real FastAPI/uvicorn
server) with a loopback stand-in for a remote LLM that answers after --llm-delay seconds, so the
figures measure serving, validation and retrieval, not the model. For the local LLM, run
`lakerag serve` and `python -m lakerag.serving.loadtest --url http://127.0.0.1:8080` instead (one answer
takes ~20 s on 2 cores). Prints outcomes by kind, requests/s, p50/p99 latency of valid and invalid
requests, and the ratio of valid answers/s to the 1-client baseline. Both phases run warm (each
valid request is sent once first: the retriever remembers rerank vectors of passages it has seen,
so a repeated question is faster than a new one). Writes bench/results/loadtest.json.

    make demo && make loadtest     # or: .venv/bin/python bench/loadtest.py --seconds 30
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, write_result  # noqa: E402

from lakerag.chain.rag import RagChain  # noqa: E402
from lakerag.retrieval.index_files import latest_index  # noqa: E402
from lakerag.chain.llm import make_llm  # noqa: E402
from lakerag.serving.loadtest import LocalChain, StubLLMServer, run_load, serve_in_background, warm_up  # noqa: E402
from lakerag.retrieval.retriever import Retriever  # noqa: E402
from lakerag.serving.server import create_app  # noqa: E402
from lakerag.settings import LLMSettings, load_settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake-root", default=str(REPO / "lakehouse" / "demo"))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="sending time of each phase")
    parser.add_argument("--llm-delay", type=float, default=0.05, help="seconds the stand-in LLM takes per call")
    args = parser.parse_args()

    settings = load_settings(REPO / "conf" / "pipeline.yml")
    index = latest_index(Path(args.lake_root) / "indexes" / "lakerag" / "dev", settings)
    with StubLLMServer(args.llm_delay) as llm:
        settings = dataclasses.replace(settings, llm=LLMSettings(
            backend="openai", model="stub", base_url=llm.base_url, max_retries=0, api_key_env="NO_KEY_HERE"))
        chain = RagChain(Retriever.from_settings(index, settings), make_llm(settings.llm), settings.chain)
        with serve_in_background(create_app(LocalChain(chain), settings.chain, "bench")) as base:
            warm_up(base, settings.chain)  # both phases then run with models loaded and caches full
            phases = {}
            for clients in (1, args.clients):
                report = run_load(base, settings.chain, clients=clients, seconds=args.seconds)
                print(f"\n== {clients} client(s), {args.seconds:g} s, index {index}")
                print(report.render())
                phases[clients] = report.figures()
    baseline, loaded = phases[1], phases[args.clients]
    ratio = (loaded["valid_ok"] / loaded["seconds"]) / (baseline["valid_ok"] / baseline["seconds"])
    print(f"\nvalid answers/s with {args.clients} clients vs 1 client (baseline): {ratio:.2f}x")
    write_result("loadtest", {"llm_delay_s": args.llm_delay, "baseline_1_client": baseline,
                              f"load_{args.clients}_clients": loaded, "valid_throughput_ratio": round(ratio, 2)})
    return 0 if all(p["unexpected"] == 0 and p["healthy_after"] for p in phases.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
