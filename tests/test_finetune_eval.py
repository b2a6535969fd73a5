"""The comparison of a fine-tuning run with the base and its "promote only if better" rule, on
inline per-question scores (no Spark, no models), and registration in a real MLflow registry."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from lakerag.finetune import gate as finetune_eval
from lakerag.finetune.train import TAG_KIND
from lakerag.finetune.gate import (
    BASE,
    CONFIGURED,
    FAQ,
    HELD_OUT,
    RERANKED,
    TUNED,
    NoFinetuneRun,
    comparison_table,
    finetune_run,
    register,
    verdict,
)
from lakerag.settings import EvaluationSettings, RetrievalSettings, Settings

CONFIG = EvaluationSettings(bootstrap_resamples=500)


def scores(recall: list[float], ndcg: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"recall@5": recall, "ndcg@10": ndcg})


def test_comparison_reports_paired_differences_to_the_base():
    table = comparison_table({BASE: scores([1, 0, 1, 0], [1.0, 0.0, 0.5, 0.0]),
                              TUNED: scores([1, 1, 1, 0], [1.0, 0.5, 1.0, 0.0]),
                              CONFIGURED: scores([1, 1, 0, 0], [0.5, 0.5, 0.0, 0.0]),
                              RERANKED: scores([1, 1, 1, 1], [1.0, 1.0, 0.5, 0.5])}, CONFIG, {RERANKED: CONFIGURED})
    assert list(zip(table["system"], table["metric"])) == [(s, m) for s in (BASE, TUNED, CONFIGURED, RERANKED)
                                                           for m in ("recall@5", "ndcg@10")]
    assert table["mean"].tolist() == [0.5, 0.375, 0.75, 0.625, 0.5, 0.25, 1.0, 0.75]
    # the trained reranker is measured against the configured one, the rest against the base
    assert table["versus"].tolist() == ["", "", BASE, BASE, BASE, BASE, CONFIGURED, CONFIGURED]
    assert table["delta"].iloc[2:].tolist() == [0.25, 0.25, 0.0, -0.125, 0.5, 0.5]
    assert table["delta"].iloc[:2].isna().all()
    tuned = table.iloc[3]
    assert tuned.delta_low <= tuned.delta <= tuned.delta_high and tuned.ci_low <= tuned["mean"] <= tuned.ci_high


def tables(held_out: tuple[list, list], faq: tuple[list, list] | None = None,
           system: str = TUNED, versus: str = BASE) -> dict[str, pd.DataFrame]:
    """Comparison tables where the reference scores 0.5 on every question and `system` as given."""
    def one(scored: tuple[list, list]) -> pd.DataFrame:
        reference = scores([0.5] * len(scored[0]), [0.5] * len(scored[0]))
        given = {versus: reference, system: scores(*scored)}
        return comparison_table({BASE: reference, **given}, CONFIG, {system: versus})

    out = {HELD_OUT: one(held_out)}
    if faq is not None:
        out[FAQ] = one(faq)
    return out


ENOUGH = {HELD_OUT: 20, FAQ: 20}


def test_promoted_only_when_the_held_out_gain_is_beyond_its_interval():
    better = ([1.0] * 18 + [0.5] * 2, [1.0] * 18 + [0.5] * 2)
    assert verdict(tables(better, faq=([0.5] * 20, [0.5] * 20)), TUNED, ENOUGH, 20)[0]
    # a gain on a few questions only: the interval of the difference reaches zero
    promoted, why = verdict(tables(([1.0] + [0.5] * 19, [1.0, 0.0] + [0.5] * 18)), TUNED, ENOUGH, 20)
    assert not promoted and why.startswith("not better beyond the interval: ndcg@10 on the held-out split")
    # the same model as the base: a zero difference is not better
    assert verdict(tables(([0.5] * 20, [0.5] * 20)), TUNED, ENOUGH, 20) == (
        False, "not better beyond the interval: ndcg@10 on the held-out split +0.000 [+0.000, +0.000] vs base embedding")


def test_not_promoted_when_worse_on_another_set_or_metric():
    promoted, why = verdict(tables(([1.0] * 20, [1.0] * 20), faq=([0.5] * 20, [0.0] * 18 + [0.5] * 2)), TUNED,
                            ENOUGH, 20)
    assert not promoted and why.startswith("worse beyond the interval: debian-faq ndcg@10 -0.450")
    # better nDCG@10 on the held-out split, but its recall@5 drops beyond the interval
    promoted, why = verdict(tables(([0.0] * 18 + [0.5] * 2, [1.0] * 20)), TUNED, ENOUGH, 20)
    assert not promoted and why.startswith("worse beyond the interval: generated recall@5 -0.450")


def test_the_trained_reranker_must_beat_the_configured_one():
    # far better than no reranking, but only as good as the configured reranker: not promoted
    table = comparison_table({BASE: scores([0.0] * 20, [0.0] * 20), CONFIGURED: scores([1.0] * 20, [0.8] * 20),
                              RERANKED: scores([1.0] * 20, [0.8] * 20)}, CONFIG, {RERANKED: CONFIGURED})
    assert verdict({HELD_OUT: table}, RERANKED, ENOUGH, 20) == (
        False, "not better beyond the interval: ndcg@10 on the held-out split +0.000 [+0.000, +0.000] "
               "vs base + configured reranker")


def test_too_few_held_out_questions_promote_nothing():
    # one question gives a zero-width interval above zero: not evidence enough
    one = tables(([1.0], [1.0]))
    assert verdict(one, TUNED, {HELD_OUT: 1}, 20) == (
        False, "cannot tell: 1 held-out questions, fewer than finetune.min_held_out=20")
    assert verdict(one, TUNED, {HELD_OUT: 1}, 1)[0]


def test_register_makes_the_run_folder_the_champion(mlflow_store, tmp_path: Path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(NoFinetuneRun, match="run `lakerag finetune-embeddings` first"):
        finetune_run(_experiment_id(), None)
    with mlflow.start_run(tags={TAG_KIND: "finetune"}) as run:
        mlflow.log_artifacts(str(folder), "embedding_model")
    assert finetune_run(_experiment_id(), None).info.run_id == run.info.run_id
    assert register("lakerag_embedding", run.info.run_id, "embedding_model", "better") == "1"
    assert register("lakerag_embedding", run.info.run_id, "embedding_model", "better again") == "2"
    champion = mlflow.MlflowClient().get_model_version_by_alias("lakerag_embedding", "champion")
    assert str(champion.version) == "2" and champion.source == f"runs:/{run.info.run_id}/embedding_model"
    downloaded = Path(mlflow.artifacts.download_artifacts("models:/lakerag_embedding@champion"))
    assert (downloaded / "config.json").read_text() == "{}"


def _experiment_id() -> str:
    return mlflow.get_experiment_by_name("lakerag-test").experiment_id


def test_each_question_set_is_scored_on_its_own_rankings(monkeypatch):
    # all sets are ranked in one pass; each set must get back the rankings of its own questions
    def ranked_by_question(model, queries, ids, texts, depth):
        return [[q.split()[0], "other"] for q in queries]  # the first word is the section it finds

    monkeypatch.setattr(finetune_eval, "dense_rankings", ranked_by_question)
    sets = {HELD_OUT: pd.DataFrame({"question_id": ["a", "b"], "question": ["s1 q", "s9 q"], "section_id": ["s1", "s2"]}),
            FAQ: pd.DataFrame({"question_id": ["c", "d", "e"], "question": ["s3 q", "s4 q", "s5 q"],
                               "section_id": ["s3", "s4", "s5"]})}
    sections = pd.DataFrame({"section_id": ["s1", "s2", "s3", "s4", "s5"], "text": ["t"] * 5})
    settings = Settings(retrieval=RetrievalSettings(reranker="none"))
    result = finetune_eval.compare_systems(sets, sections, "tuned-folder", None, settings)
    recall = {name: table.set_index(["system", "metric"])["mean"][(BASE, "recall@5")] for name, table in result.items()}
    assert recall == {HELD_OUT: 0.5, FAQ: 1.0}
    assert set(result[FAQ]["system"]) == {BASE, TUNED}  # no configured reranker, no trained one given
