"""Commands that evaluate and improve the chain: generate-eval-set, evaluate, check-judge, promote,
finetune, evaluate-finetuned."""
from __future__ import annotations

import argparse
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
    index_root_of,
    engine_task,
    with_budget,
)

log = logging.getLogger("lakerag")


def _generate_eval_set(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.evaluation.question_sets import candidates_from_feedback, run_generation, thumbs_down

    settings = with_budget(settings, "evaluation", args.max_sections)
    started = time.perf_counter()
    report = run_generation(spark, lakehouse, settings)
    log.info("question generation done in %.1f s", time.perf_counter() - started)
    kept = report.statuses.get("active", 0)
    print(f"question pairs written: {report.statuses or 0} from {report.sections} sections "
          f"({kept / report.sections if report.sections else 0:.2f} kept a section)  rejected as: "
          f"{report.reasons or 'none'}  sections without valid output: {report.failed_sections}  retired: "
          f"{report.retired}  erased: {report.erased}  moved to their section's split: {report.resplit}  "
          f"tokens in/out: {report.prompt_tokens}/{report.completion_tokens}  sections left for later runs: "
          f"{report.waiting}  left out for their language (evaluation.languages): {report.other_languages}")
    candidates = candidates_from_feedback(spark, lakehouse, thumbs_down([mlflow_experiment(args)]))
    print(f"candidate questions from thumbs-down feedback (status candidate, to review): {candidates}")
    return 0


def _evaluate(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from lakerag.chain.registry import resolve_model
    from lakerag.evaluation.jobs import NoQuestions, run_evaluation

    experiment_id = mlflow_experiment(args)
    name = model_name_of(args)
    targets = ([(f"version {v}", f"models:/{name}/{v}") for v in args.version] if args.version else
               [(f"@{alias}", f"models:/{name}@{alias}") for alias in args.aliases])
    for label, target in targets:
        try:
            version, uri = resolve_model(target)
        except MlflowException:
            print(f"{name} has no {label}: skipped")
            continue
        for eval_set in args.eval_set:
            try:
                result = run_evaluation(spark, lakehouse, settings, uri, version, eval_set,
                                        experiment_id, not args.no_judge, answers=not args.retrieval_only)
            except NoQuestions as err:
                print(f"{label} on {eval_set}: skipped, {err}")
                continue
            if result is None:
                print(f"{label} (version {version}) already evaluated on these {eval_set} questions with these "
                      "settings and this index version")
                continue
            print(f"{label} (version {version}) on {eval_set}: {len(result['table'])} questions, run {result['run_id']}")
            for metric, s in result["summary"].items():
                if s.nan_rate == 1.0:
                    continue  # not measured in this mode
                print(f"  {metric:18} {s.mean:6.3f}  [{s.ci_low:.3f}, {s.ci_high:.3f}]  NaN {s.nan_rate:.0%}")
    return 0


def _check_judge(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.evaluation.jobs import NoQuestions, run_judge_check

    try:
        result = run_judge_check(spark, lakehouse, settings, mlflow_experiment(args))
    except NoQuestions as err:
        print(f"lakerag check-judge: {err}", file=sys.stderr)
        return 2
    config = settings.evaluation
    print(f"judge {result['judge']} on {len(result['table']) // 2} Debian FAQ questions ({len(result['table'])} "
          f"cases: each question's own answer and another question's), MLflow run {result['run_id']}")
    for metric, s in result["accuracy"].items():
        used = ("gated" if s.mean >= config.judge_min_accuracy else "advisory") if metric in config.judged_gate_metrics \
            else "reported"
        print(f"  {metric:18} accuracy {s.mean:5.3f}  [{s.ci_low:.3f}, {s.ci_high:.3f}]  {used}")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from lakerag.chain.llm import model_key
    from lakerag.evaluation.jobs import promote
    from lakerag.settings import load_settings

    settings = load_settings(args.conf, args.overrides)
    promoted, explanation = promote(model_name_of(args), mlflow_experiment(args), args.eval_set,
                                    settings.evaluation, model_key(settings))
    print(explanation)
    return 0 if promoted else 1


def _finetune(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.finetune.train import NotEnoughPairs, run_finetune
    from lakerag.retrieval.index_files import latest_index

    mlflow_experiment(args)
    output = Path(args.output) if args.output else Path(args.lake_root) / "finetuned" / args.catalog / args.schema
    try:
        report = run_finetune(spark, lakehouse, settings, latest_index(index_root_of(args), settings), output)
    except NotEnoughPairs as err:
        print(f"lakerag finetune-embeddings: {err}", file=sys.stderr)
        return 2
    print(f"trained on {report.pairs} pairs ({report.triplets} triplets with hard negatives); MLflow run {report.run_id}")
    for name, value in report.metrics.items():
        print(f"  {name}: {value}")
    print(f"embedding model: {report.embedding_folder}  (use: --set models.embedding=<folder>, or add it to "
          "gold.extra_models to embed beside the base model)")
    print(f"reranker: {report.reranker_folder}  (use: --set retrieval.reranker=cross-encoder "
          "--set retrieval.cross_encoder=<folder>)")
    return 0


def _evaluate_finetuned(spark, lakehouse, settings, args: argparse.Namespace) -> int:
    from lakerag.evaluation.jobs import NoQuestions
    from lakerag.finetune.gate import RERANKED, TUNED, NoFinetuneRun, evaluate_finetuned, table_lines
    from lakerag.retrieval.index_files import latest_index
    from lakerag.chain.registry import default_model_name

    experiment_id = mlflow_experiment(args)
    unity_catalog = args.registry_uri == "databricks-uc"
    names = {TUNED: args.embedding_model_name or default_model_name(args.catalog, args.schema, unity_catalog,
                                                                    "lakerag_embedding"),
             RERANKED: args.reranker_model_name or default_model_name(args.catalog, args.schema, unity_catalog,
                                                                      "lakerag_reranker")}
    try:
        report = evaluate_finetuned(spark, lakehouse, settings, latest_index(index_root_of(args), settings),
                                    experiment_id, names, args.run_id)
    except (NoFinetuneRun, NoQuestions, FileNotFoundError) as err:
        print(f"lakerag evaluate-finetuned: {err}", file=sys.stderr)
        return 2
    print(f"fine-tuning run {report.finetune_run_id} against models.embedding={settings.models.embedding} and "
          f"retrieval.reranker={settings.retrieval.reranker}; MLflow run {report.run_id}")
    for name, table in report.tables.items():
        print(f"\n{name} ({report.questions[name]} questions)")
        print("\n".join(table_lines(table)))
    print()
    for system, (better, why) in report.verdicts.items():
        if system in report.registered:
            outcome = f"registered as {names[system]} version {report.registered[system]} @champion"
        else:
            outcome = report.skipped[system] if better else "not promoted"
        print(f"{system}: {outcome}; {why}")
    folder = Path(report.output) if report.output else Path("<the finetune --output folder>")
    if report.verdicts[TUNED][0]:
        print(f"to use the embedding model: --set models.embedding={folder / 'embedding'}, then embed-gold, "
              "build-index, register-chain")
    if report.verdicts[RERANKED][0]:
        print(f"to use the reranker: --set retrieval.reranker=cross-encoder --set retrieval.cross_encoder={folder / 'reranker'}")
    return 0


def add_commands(tasks: argparse._SubParsersAction) -> None:
    """Add the evaluation commands to the `lakerag` parser."""
    generate, where = engine_task(
        tasks, "generate-eval-set", _generate_eval_set,
        "write question / reference-answer pairs from silver sections into eval_questions",
        "With llm.* and the seed examples of evaluation.*, write one pair per style for each "
        "section the budget admits (evaluation.min_chars, max_sections, seeded order); pairs whose "
        "answer is not supported by the section or whose question nearly repeats a kept one are "
        "stored as rejected with the reason; pairs of sections that left silver are retired, and "
        "pairs of documents whose file was deleted are erased. Thumbs-down feedback from the chat page "
        "(assessments on the answers' traces in --experiment) becomes questions with status candidate, for review. "
        "Sections that already have pairs from this generator and prompt version are skipped.",
    )
    generate.add_argument("--max-sections", type=int, default=None,
                          help="sections this run may use (overrides evaluation.max_sections; 0 = all)")
    add_mlflow(where)  # thumbs-down feedback is read from this experiment's traces

    evaluate_, where = engine_task(
        tasks, "evaluate", _evaluate,
        "evaluate registered chain versions on the question sets and log results to MLflow",
        "For each --aliases (or --version) version: answer the test split of eval_questions (--eval-set "
        "generated) and/or the Debian FAQ's own questions (debian-faq) through mlflow.genai.evaluate, "
        "so each answer is a trace with its scores as assessments; the scorers compute recall@k, MRR, "
        "nDCG@k, context precision, citation accuracy and (unless --no-judge) faithfulness, answer "
        "relevance, context recall and answer correctness with the LLM judge; means with bootstrap "
        "intervals, the per-question table and report.html are logged to the same run. A version "
        "already evaluated on the same questions, mode, logged settings and index version is skipped.",
    )
    add_mlflow(where)
    add_model(where, alias=None)
    evaluate_.add_argument("--aliases", nargs="+", default=["challenger", "champion"],
                           help="aliases whose versions to evaluate (default: challenger champion)")
    evaluate_.add_argument("--version", nargs="+", default=None, metavar="N",
                           help="registered model versions to evaluate instead of aliases")
    evaluate_.add_argument("--eval-set", nargs="+", choices=("generated", "debian-faq"), default=["generated"])
    evaluate_.add_argument("--no-judge", action="store_true", help="no LLM judge: judged metrics are NaN")
    evaluate_.add_argument("--retrieval-only", action="store_true",
                           help="run only the logged chain's retriever (no answers, no LLM calls): "
                                "retrieval metrics only, fast")

    check, where = engine_task(
        tasks, "check-judge", _check_judge,
        "measure the LLM judge's accuracy on the Debian FAQ before its metrics may gate promotion",
        "On evaluation.judge_check_questions Debian FAQ questions the judge (llm.*) scores the authors' "
        "answer to each question (should pass) and the authors' answer to a different question "
        "(should fail faithfulness, correctness and relevance), with the question's own section as "
        "context and reference. Logs accuracy per metric with bootstrap intervals to MLflow; `promote` "
        "gates on evaluation.judged_gate_metrics only where the latest check reached "
        "evaluation.judge_min_accuracy (else they are advisory).",
    )
    add_mlflow(where)

    promote_ = tasks.add_parser(
        "promote", help="move @champion to @challenger if the paired evaluation gate passes (exit 1 if not)",
        description="Compare the latest evaluations of @challenger and @champion on --eval-set question "
                    "by question: for each of evaluation.gate_metrics (and the judged_gate_metrics the "
                    "judge's check trusts) the challenger-minus-champion differences get a paired "
                    "bootstrap interval; refused when it lies below zero or the mean drop exceeds "
                    "evaluation.max_drop. Prints the verdict table and logs it to MLflow.")
    where = add_common(promote_, engine=False)
    add_mlflow(where)
    add_model(where, alias="challenger")
    promote_.add_argument("--eval-set", choices=("generated", "debian-faq"), default="generated")
    promote_.set_defaults(runner=_promote)

    finetune_, where = engine_task(
        tasks, "finetune-embeddings", _finetune,
        "fine-tune the embedding model and train a reranker on the generated train split",
        "Train on the active train-split questions of eval_questions (never the test split), each with "
        "its section: the embedding model with in-batch negatives plus hard negatives mined from the "
        "latest index's sections (multiple-negatives ranking loss), and a cross-encoder reranker from "
        "finetune.reranker_base with a fresh one-logit head (binary cross-entropy). Saves both under "
        "--output and logs them with their training metrics to MLflow. Epochs, batch size and the "
        "rest come from finetune.* in --conf.",
    )
    add_index_root(where)
    add_mlflow(where)
    finetune_.add_argument("--output", default=None,
                           help="folder for the trained models (default <lake-root>/finetuned/<catalog>/<schema>)")

    finetuned_eval, where = engine_task(
        tasks, "evaluate-finetuned", _evaluate_finetuned,
        "compare a fine-tuning run's models with the base; register each one only if it is better",
        "Section retrieval over the latest index's sections on the held-out split (the generated test "
        "split) and the Debian FAQ's questions: the base vs the fine-tuned embedding model, and the "
        "base model's top retrieval.rerank_candidates reordered by the trained reranker vs by the "
        "configured retrieval.reranker. Prints recall@5 and nDCG@10 with bootstrap intervals and each "
        "system's paired difference to what it would replace, and logs them to MLflow. A model is "
        "registered (alias @champion) only if, with at least finetune.min_held_out held-out questions, "
        "its held-out nDCG@10 difference interval lies above zero and on no set is a difference "
        "interval below zero. On Unity Catalog a better model is reported, not registered (it is a "
        "plain folder, not an MLflow model with a signature).",
    )
    add_index_root(where)
    add_mlflow(where)
    finetuned_eval.add_argument("--run-id", default=None,
                                help="the fine-tuning MLflow run to evaluate (default: the newest finished one in "
                                     "the experiment)")
    finetuned_eval.add_argument("--embedding-model-name", default=None,
                                help="registered model for a better embedding model (default lakerag_embedding; "
                                     "<catalog>.<schema>.lakerag_embedding with --registry-uri databricks-uc)")
    finetuned_eval.add_argument("--reranker-model-name", default=None,
                                help="registered model for a better reranker (default lakerag_reranker, likewise)")
