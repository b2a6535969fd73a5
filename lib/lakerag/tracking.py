"""MLflow wiring: which tracking store and registry, which experiment, and run logging.

Locally the default is a sqlite store beside the Delta tables (`<lake root>/mlflow.db`, artifacts
in `<lake root>/mlartifacts`), so runs, the registry and aliases work offline. On Databricks pass
`--tracking-uri databricks --registry-uri databricks-uc` (databricks.yml does) and the same code
logs to the workspace and registers in Unity Catalog.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "lakerag"


def configure_mlflow(tracking_uri: str | None, registry_uri: str | None, lake_root: Path) -> str:
    """Point MLflow at the given stores (default: sqlite under `lake_root`); returns the tracking URI."""
    import mlflow

    # MLflow's per-file artifact progress bars are noise in job logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    lake_root = Path(lake_root).resolve()
    if not tracking_uri:
        lake_root.mkdir(parents=True, exist_ok=True)
        tracking_uri = f"sqlite:///{lake_root / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri or tracking_uri)
    return tracking_uri


def use_experiment(name: str, lake_root: Path) -> str:
    """Make `name` the active experiment, creating it (artifacts under `lake_root` when the
    store is local); returns its id."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        uri = mlflow.get_tracking_uri()
        scheme = uri.split(":", 1)[0] if ":" in uri else ""
        # sqlite / file / a plain path keep artifacts beside the lake; databricks and servers decide themselves
        local = scheme in ("sqlite", "file", "")
        location = (Path(lake_root).resolve() / "mlartifacts").as_uri() if local else None
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def log_task_run(run_name: str, params: dict[str, Any], metrics: dict[str, float]) -> str:
    """One MLflow run in the active experiment with `params` and `metrics`; returns its id."""
    import mlflow

    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
    log.info("logged MLflow run %s (%s)", run.info.run_id, run_name)
    return run.info.run_id
