"""Benchmark: hypothetical answers as queries (HyDE) for body retrieval, measured against the defaults.

Issue 18 leaves body retrieval (the Debian FAQ's questions with each section's own heading
withheld) at nDCG@10 0.792 without the graph, goal 0.85. HyDE (Gao et al., 2022) asks an LLM to
write a short passage that would answer the question and searches with the question plus that
passage, so the first stage and the rescoring compare passage with passage. This measures it
with the packaged LLM (llm.* from conf, greedy) on the index bench/retrieval_quality.py builds
(three manuals, MiniLM + stored mpnet vectors), withheld for the faq and context (the product
text) for the generated questions, with the chain's retrieval defaults and the graph off.
The passages are saved in bench/data/hyde_passages.json (by question) and read back on the next
run instead of asking the LLM again (--regenerate asks again). Prints nDCG@10, recall@1,
recall@5 and p50 (search only; the LLM's seconds a question are printed apart) and writes
bench/results/hyde.json.

    .venv/bin/python bench/hyde.py          # about 16 minutes the first time on 2 cores
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, silver_lakehouse, write_result  # noqa: E402
from retrieval_quality import MANUALS, measure, question_sets, withhold_own_heading  # noqa: E402

from lakerag.chain.llm import make_llm, model_key  # noqa: E402
from lakerag.enrich.embeddings import run_gold  # noqa: E402
from lakerag.enrich.index_build import build_index  # noqa: E402
from lakerag.retrieval.retriever import Retriever  # noqa: E402
from lakerag.settings import Settings  # noqa: E402

SAVED = REPO / "bench" / "data" / "hyde_passages.json"
SYSTEM = ("You write the passage of a software manual (Debian, R) that answers the user's question: "
          "two or three plain sentences, no preamble, no code.")


def passages(settings: Settings, questions: list[str], regenerate: bool) -> tuple[dict[str, str], list[float]]:
    """Each question's hypothetical passage (saved ones reused) and the LLM's seconds for new ones."""
    saved = json.loads(SAVED.read_text()) if SAVED.is_file() and not regenerate else {}
    found = saved.get("passages", {}) if saved.get("model") == model_key(settings) else {}
    todo = [q for q in dict.fromkeys(questions) if q not in found]
    took: list[float] = []
    if todo:
        llm = make_llm(settings.llm)
        for n, question in enumerate(todo, start=1):
            reply = llm.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                             max_tokens=96)
            found[question] = reply.text.strip()
            took.append(reply.latency_s)
            if n % 20 == 0 or n == len(todo):
                print(f"  {n}/{len(todo)} passages, {statistics.median(took):.1f} s median", flush=True)
        SAVED.write_text(json.dumps({"model": model_key(settings), "system": SYSTEM, "passages": found},
                                    indent=1, ensure_ascii=False) + "\n")
    return found, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regenerate", action="store_true", help="ask the LLM again for every passage")
    args = parser.parse_args()
    base = Settings()
    results: dict = {"llm": model_key(base), "system_prompt": SYSTEM, "sets": {}}
    with tempfile.TemporaryDirectory() as root:
        with silver_lakehouse(Path(root), base, MANUALS) as (spark, lakehouse):
            faq, generated, _, _ = question_sets(spark, lakehouse)
            written, took = passages(base, [q for q, _ in [*faq.values(), *generated.values()]], args.regenerate)
            if took:
                results["llm_s_per_question_p50"] = round(statistics.median(took), 2)
            for variant, sets in (("context", {"generated": generated}), ("withheld", {"faq": faq})):
                settings = dataclasses.replace(base, gold=dataclasses.replace(
                    base.gold, extra_models=(base.models.rerank,), contextual_text=True))
                if variant == "withheld":
                    withhold_own_heading(spark, lakehouse)
                run_gold(spark, lakehouse, settings)
                folder = build_index(spark, lakehouse, settings, Path(root) / "indexes" / variant).folder
                retriever = Retriever(folder, dataclasses.replace(settings.retrieval, graph_edges=()),
                                      settings.models.rerank)
                for set_name, questions in sets.items():
                    forms = {"question (default)": questions,
                             "question + passage (HyDE)": {qid: (f"{q}\n{written[q]}", s)
                                                           for qid, (q, s) in questions.items()},
                             "passage alone": {qid: (written[q] or q, s) for qid, (q, s) in questions.items()}}
                    for form, asked in forms.items():
                        for mode, rerank in (("hybrid", False), ("hybrid", True)):
                            name = f"{set_name} ({variant}) {form} hybrid{' + rescore blended' if rerank else ''}"
                            results["sets"][name] = figures = measure(retriever, asked, mode, rerank)
                            print(f"{name:<72} " + " ".join(str(v) for v in figures.values()), flush=True)
    print("columns: ndcg@10 recall@1 recall@5 p50_ms")
    write_result("hyde", results)


if __name__ == "__main__":
    main()
