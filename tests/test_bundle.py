"""databricks.yml stays consistent with the code it deploys: every resource validates against the
typed models of the `databricks-bundles` package (unknown or misspelt fields are errors), every
task's entry point exists and its parameters parse (the bundle CLI itself is not available offline)."""
import re
from pathlib import Path

import pytest
import yaml
from databricks.bundles.jobs import Job
from databricks.bundles.model_serving_endpoints import ModelServingEndpoint
from databricks.bundles.registered_models import RegisteredModel

from lakerag.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
BUNDLE = yaml.safe_load((REPO / "databricks.yml").read_text())
RESOURCES = BUNDLE["resources"]
TASKS = [t for job in RESOURCES["jobs"].values() for t in job["tasks"]]
COMMAND_OF_SCRIPT = {p.stem: p.stem.replace("_", "-") for p in (REPO / "jobs").glob("*.py")}
TYPED = {"jobs": Job, "registered_models": RegisteredModel, "model_serving_endpoints": ModelServingEndpoint}


def test_every_resource_validates_against_the_bundle_models():
    assert set(RESOURCES) == set(TYPED)
    for kind, resources in RESOURCES.items():
        for name, resource in resources.items():
            TYPED[kind].from_dict(resource)  # raises on unknown fields and wrong shapes


def test_the_typed_check_can_fail():
    job = dict(RESOURCES["jobs"]["lakerag_pipeline"])
    job["tasks"] = [dict(job["tasks"][0], spark_python_task={"pyfile": "x.py"})]
    with pytest.raises(ValueError, match="Unexpected field 'pyfile'"):
        Job.from_dict(job)


def test_every_variable_used_is_declared():
    used = set(re.findall(r"\$\{var\.(\w+)\}", (REPO / "databricks.yml").read_text()))
    assert used <= set(BUNDLE["variables"])


def test_targets_dev_and_prod_exist_with_dev_default():
    assert set(BUNDLE["targets"]) >= {"dev", "prod"}
    assert BUNDLE["targets"]["dev"].get("default") is True and BUNDLE["targets"]["dev"]["mode"] == "development"


def test_pipeline_runs_ingest_to_promote_in_order():
    tasks = RESOURCES["jobs"]["lakerag_pipeline"]["tasks"]
    after = {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])] for t in tasks}
    assert after == {"ingest_bronze": [], "build_silver": ["ingest_bronze"], "summarize_sections": ["build_silver"],
                     "embed_gold": ["summarize_sections"], "build_index": ["embed_gold"],
                     "register_chain": ["build_index"], "generate_eval_set": ["build_silver"],
                     "evaluate": ["register_chain", "generate_eval_set"], "check_judge": ["build_silver"],
                     "promote": ["evaluate", "check_judge"]}


def test_serving_endpoint_serves_the_registered_model_with_secrets_from_a_scope_and_the_agents_environment():
    [entity] = RESOURCES["model_serving_endpoints"]["lakerag_chain"]["config"]["served_entities"]
    model = RESOURCES["registered_models"]["lakerag_chain"]
    assert entity["entity_name"] == f"{model['catalog_name']}.{model['schema_name']}.{model['name']}"
    env = entity["environment_vars"]
    assert all(env[name].startswith("{{secrets/") for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN"))
    # requests are traced to the experiment, where the chat page's feedback lands too
    assert (env["MLFLOW_EXPERIMENT_NAME"], env["ENABLE_MLFLOW_TRACING"]) == ("${var.experiment}", "true")


def test_the_registered_chain_on_databricks_queries_the_vector_search_index_build_index_syncs():
    [register] = [t for t in TASKS if t["task_key"] == "register_chain"]
    [build] = [t for t in TASKS if t["task_key"] == "build_index"]
    params = register["spark_python_task"]["parameters"]
    sets = [params[i + 1] for i, p in enumerate(params) if p == "--set"]
    build_params = build["spark_python_task"]["parameters"]
    endpoint = build_params[build_params.index("--vector-search-endpoint") + 1]
    assert "retrieval.backend=vector_search" in sets and f"retrieval.vector_search_endpoint={endpoint}" in sets


def test_each_task_script_exists_and_its_parameters_parse():
    for task in TASKS:
        script = task["spark_python_task"]["python_file"]
        assert (REPO / script).is_file(), script
        params = task["spark_python_task"]["parameters"]
        args = build_parser().parse_args([COMMAND_OF_SCRIPT[Path(script).stem], *params])
        assert getattr(args, "engine", "databricks") == "databricks"
        assert args.catalog == "${var.catalog}" and args.schema == "${var.schema}"
        if hasattr(args, "tracking_uri"):
            assert (args.tracking_uri, args.registry_uri) == ("databricks", "databricks-uc")


def test_every_job_script_is_a_task_and_runs_its_command():
    scripts = {Path(t["spark_python_task"]["python_file"]).name for t in TASKS}
    assert scripts == {p.name for p in (REPO / "jobs").glob("*.py")}
    for path in (REPO / "jobs").glob("*.py"):
        assert f'main(["{COMMAND_OF_SCRIPT[path.stem]}", *sys.argv[1:]])' in path.read_text()
