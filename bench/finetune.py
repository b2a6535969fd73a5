"""Benchmark: the fine-tuned embedding model and the trained reranker (`lakerag finetune-embeddings`).

`lakerag finetune-embeddings` trains on the generated eval set's train split. Generating a pair
with the packaged 0.5B LLM takes about a minute on this CPU, so this benchmark stands
heading-derived pairs in for generated ones: each section of the corpus (the Debian FAQ excepted)
with a heading and at least 200 characters gives ("What does the documentation say about
<heading>?", that section). The pairs are split by a hash of the section id: 80% go into
eval_questions as the train split, 20% are held out. Then, on this machine:
1. bronze -> silver -> gold -> index of data/corpus, as the pipeline does;
2. `run_finetune` (the job's code): the embedding model (in-batch + mined hard negatives) and the
   cross-encoder reranker, timed;
3. section retrieval on the held-out pairs and on the Debian FAQ's own questions (a document
   never trained on): dense cosine over the indexed sections with the base vs the fine-tuned
   model, and the base model's top 20 reranked by the trained cross-encoder vs not reranked.
Prints recall@5 and nDCG@10 (ranx) with 95% bootstrap intervals, and the training time; writes
bench/results/finetune.json.

    .venv/bin/python bench/finetune.py
"""
from __future__ import annotations

import hashlib
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from common import silver_lakehouse, write_result  # noqa: E402

from lakerag.evaluation import retrieval_scores, summarise  # noqa: E402
from lakerag.finetune import run_finetune  # noqa: E402
from lakerag.gold import run_gold  # noqa: E402
from lakerag.index import build_index  # noqa: E402
from lakerag.models import load_sentence_model  # noqa: E402
from lakerag.settings import Settings  # noqa: E402
from lakerag.tables import EVAL_QUESTIONS, SILVER_DOCUMENTS, SILVER_SECTIONS  # noqa: E402
from lakerag.tracking import configure_mlflow, use_experiment  # noqa: E402

RERANK_DEPTH = 20


def pairs_and_faq(sections: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train pairs, held-out pairs, Debian FAQ questions) as question_id, question, section_id."""
    faq = sections[(sections["file_name"] == "debian-faq.pdf") & sections["title"].str.endswith("?")]
    faq = pd.DataFrame({"question_id": faq["section_id"], "question": faq["title"], "section_id": faq["section_id"]})
    usable = sections[(sections["file_name"] != "debian-faq.pdf") & (sections["level"] >= 1)
                      & (sections["text"].str.len() >= 200)]
    pairs = pd.DataFrame({"question_id": "pair-" + usable["section_id"], "section_id": usable["section_id"],
                          "question": "What does the documentation say about " + usable["title"] + "?"})
    held_out = pairs["section_id"].map(lambda s: int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) % 5 == 0)
    return pairs[~held_out], pairs[held_out], faq


def dense_rankings(model: str, queries: list[str], ids: list[str], texts: list[str], depth: int) -> list[list[str]]:
    """Section ids by cosine with each query, best first."""
    encoder = load_sentence_model(model)
    corpus = encoder.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    scores = encoder.encode(queries, normalize_embeddings=True, show_progress_bar=False) @ corpus.T
    return [[ids[i] for i in np.argsort(-row)[:depth]] for row in scores]


def reranked(reranker: str, queries: list[str], rankings: list[list[str]], text_of: dict[str, str]) -> list[list[str]]:
    """The top RERANK_DEPTH of each ranking reordered by the cross-encoder, the rest after."""
    from sentence_transformers.cross_encoder import CrossEncoder

    model = CrossEncoder(reranker, device="cpu")
    out = []
    for query, ranking in zip(queries, rankings):
        head = ranking[:RERANK_DEPTH]
        scores = model.predict([(query, text_of[s]) for s in head], show_progress_bar=False)
        out.append([head[i] for i in np.argsort(-np.asarray(scores))] + ranking[RERANK_DEPTH:])
    return out


def scores(questions: pd.DataFrame, rankings: list[list[str]], settings: Settings) -> dict[str, dict]:
    """recall@5 and nDCG@10 with their bootstrap intervals."""
    config = settings.evaluation
    at5, at10 = retrieval_scores(questions, rankings, 5), retrieval_scores(questions, rankings, 10)
    out = {}
    for name, values in (("recall@5", at5["recall@k"]), ("ndcg@10", at10["ndcg@k"])):
        summary = summarise(values, config.bootstrap_resamples, config.confidence, config.seed)
        out[name] = {"mean": round(summary.mean, 3), "low": round(summary.ci_low, 3), "high": round(summary.ci_high, 3)}
    return out


def main() -> int:
    settings = Settings()
    with tempfile.TemporaryDirectory() as scratch, silver_lakehouse(Path(scratch), settings) as (spark, lakehouse):
        run_gold(spark, lakehouse, settings)
        index = build_index(spark, lakehouse, settings, Path(scratch) / "indexes").folder
        documents = spark.table(lakehouse.table(SILVER_DOCUMENTS.name)).select("doc_id", "file_name")
        sections = (spark.table(lakehouse.table(SILVER_SECTIONS.name))
                    .select("section_id", "doc_id", "title", "level", "text").join(documents, "doc_id").toPandas())
        indexed = pd.read_parquet(index / "sections.parquet")
        sections = sections[sections["section_id"].isin(set(indexed["section_id"]))]
        train, held_out, faq = pairs_and_faq(sections)
        rows = [{"question_id": r.question_id, "section_id": r.section_id,
                 "doc_id": sections.set_index("section_id").at[r.section_id, "doc_id"], "question": r.question,
                 "reference_answer": "", "style": "factual", "generator": "bench:headings", "prompt_version": "v1",
                 "seed": 0, "split": "train", "status": "active", "reason": None,
                 "created_at": datetime.now(timezone.utc)} for r in train.itertuples()]
        spark.createDataFrame(rows, EVAL_QUESTIONS.schema).write.insertInto(lakehouse.table(EVAL_QUESTIONS.name))
        configure_mlflow(None, None, Path(scratch))
        use_experiment("lakerag-bench-finetune", Path(scratch))
        report = run_finetune(spark, lakehouse, settings, index, Path(scratch) / "finetuned")
        print(f"trained on {report.pairs} pairs: {report.metrics}")

        ids, texts = indexed["section_id"].tolist(), indexed["text"].tolist()
        text_of = dict(zip(ids, texts))
        results: dict[str, dict] = {}
        for name, questions in (("held-out pairs", held_out), ("Debian FAQ", faq)):
            queries = questions["question"].tolist()
            base = dense_rankings(settings.models.embedding, queries, ids, texts, 50)
            tuned = dense_rankings(str(report.embedding_folder), queries, ids, texts, 50)
            results[name] = {
                "questions": len(questions),
                "base embedding": scores(questions, base, settings),
                "fine-tuned embedding": scores(questions, tuned, settings),
                "base + trained reranker": scores(questions, reranked(str(report.reranker_folder), queries, base,
                                                                      text_of), settings),
            }
    print(f"\ntraining pairs: {report.pairs} (held out: {len(held_out)}), time: embedding "
          f"{report.metrics['embedding_train_seconds']} s, reranker {report.metrics['reranker_train_seconds']} s")
    for name, rows_ in results.items():
        print(f"\n{name} ({rows_['questions']} questions)   recall@5 [95% CI]      nDCG@10 [95% CI]")
        for system, metrics in rows_.items():
            if system == "questions":
                continue
            r, n = metrics["recall@5"], metrics["ndcg@10"]
            print(f"  {system:26} {r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]   "
                  f"{n['mean']:.3f} [{n['low']:.3f}, {n['high']:.3f}]")
    write_result("finetune", {"pairs": report.pairs, "held_out": len(held_out), **report.metrics, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
