"""databricks.yml stays consistent with the code it deploys (the bundle CLI is not available offline)."""
import re
from pathlib import Path

import yaml

from lakerag.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
BUNDLE = yaml.safe_load((REPO / "databricks.yml").read_text())
TASKS = [t for job in BUNDLE["resources"]["jobs"].values() for t in job["tasks"]]
COMMAND_OF_SCRIPT = {p.stem: p.stem.replace("_", "-") for p in (REPO / "jobs").glob("*.py")}


def test_every_variable_used_is_declared():
    used = set(re.findall(r"\$\{var\.(\w+)\}", (REPO / "databricks.yml").read_text()))
    assert used <= set(BUNDLE["variables"])


def test_targets_dev_and_prod_exist_with_dev_default():
    assert set(BUNDLE["targets"]) >= {"dev", "prod"}
    assert BUNDLE["targets"]["dev"].get("default") is True


def test_each_task_script_exists_and_its_parameters_parse():
    for task in TASKS:
        script = task["spark_python_task"]["python_file"]
        assert (REPO / script).is_file(), script
        params = task["spark_python_task"]["parameters"]
        args = build_parser().parse_args([COMMAND_OF_SCRIPT[Path(script).stem], *params])
        assert args.engine == "databricks"
        assert args.catalog == "${var.catalog}" and args.schema == "${var.schema}"


def test_every_job_script_is_a_task_and_runs_its_command():
    scripts = {Path(t["spark_python_task"]["python_file"]).name for t in TASKS}
    assert scripts == {p.name for p in (REPO / "jobs").glob("*.py")}
    for path in (REPO / "jobs").glob("*.py"):
        assert f'main(["{COMMAND_OF_SCRIPT[path.stem]}", *sys.argv[1:]])' in path.read_text()
