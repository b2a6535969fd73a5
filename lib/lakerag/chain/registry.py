"""Log the chain to MLflow (models from code), check it, register it, move aliases, load it."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lakerag
from lakerag.settings import Settings, settings_to_dict
from lakerag.chain.llm import model_key
from lakerag.chain.requirements import requirements

log = logging.getLogger(__name__)
CHAIN_FILE = Path(__file__).with_name("agent.py")
EXAMPLE = {"input": [{"role": "user", "content": "How do I keep my Debian system up to date?"}],
           "custom_inputs": {"filters": ["file=debian-faq.pdf"]}}


def default_model_name(catalog: str, schema: str, unity_catalog: bool, model: str = "lakerag_chain") -> str:
    """`catalog.schema.<model>` in Unity Catalog, else `<model>`."""
    return f"{catalog}.{schema}.{model}" if unity_catalog else model


@dataclass
class Registered:
    """What `register_chain` did."""

    model_uri: str  # the logged model (runs:/ or models:/m-...)
    run_id: str
    name: str
    version: str
    alias: str
    check: dict[str, Any]  # the answer of the reload check


def auth_policy(settings: Settings) -> Any:
    """With access.identity databricks, what Model Serving lets the chain do: read who the
    caller is with their own credentials (on-behalf-of-user), and query the Vector Search index
    and the LLM endpoint with its own; None otherwise."""
    if settings.access.identity != "databricks":
        return None
    from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
    from mlflow.models.resources import DatabricksServingEndpoint, DatabricksVectorSearchIndex

    resources = []
    if settings.retrieval.backend == "vector_search":
        resources.append(DatabricksVectorSearchIndex(index_name=settings.retrieval.vector_search_index))
    if settings.llm.backend == "databricks":
        resources.append(DatabricksServingEndpoint(endpoint_name=settings.llm.model))
    return AuthPolicy(user_auth_policy=UserAuthPolicy(api_scopes=["iam.current-user:read"]),
                      system_auth_policy=SystemAuthPolicy(resources=resources))


def log_chain(settings: Settings) -> Any:
    """Log the agent from code with its settings (which name where the index is, not the index
    itself), its code and the requirements of the query side."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name="chain",
        python_model=str(CHAIN_FILE),
        model_config=settings_to_dict(settings),
        code_paths=[str(Path(lakerag.__file__).parent)],  # the model carries its own lakerag
        input_example=EXAMPLE,
        pip_requirements=requirements(settings),
        auth_policy=auth_policy(settings),
    )


def register_chain(settings: Settings, index_root: Path, name: str, alias: str, question: str) -> Registered:
    """Log the chain (reading the newest index under `index_root`, or Vector Search when
    retrieval.backend says so), reload it in this process and answer `question` as a check,
    register the version and point `alias` at it."""
    import dataclasses

    import mlflow
    from mlflow import MlflowClient

    from lakerag.chain.responses import agent_request, answer_of

    if settings.retrieval.backend == "local":
        settings = dataclasses.replace(settings, retrieval=dataclasses.replace(
            settings.retrieval, index_root=str(Path(index_root).resolve())))
    with mlflow.start_run(run_name="register-chain") as run:
        mlflow.log_params({"index_backend": settings.retrieval.backend, "index_root": settings.retrieval.index_root,
                           "vector_search_index": settings.retrieval.vector_search_index,
                           "llm": model_key(settings), "embedding": settings.models.embedding, "k": settings.chain.k,
                           "memory": settings.chain.memory})
        info = log_chain(settings)
        log.info("logged %s; reloading it for a check", info.model_uri)
        started = time.perf_counter()
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        check = answer_of(loaded.predict(agent_request([{"role": "user", "content": question}])))
        mlflow.log_metrics({"check_load_and_answer_s": time.perf_counter() - started,
                            "check_total_tokens": check["usage"]["total_tokens"]})
        mlflow.log_params({"check_index_version": check["index"]["version"]})
        if not check["answer"]:
            raise RuntimeError(f"the reloaded chain gave an empty answer to {question!r}; not registering it")
        version = mlflow.register_model(info.model_uri, name)
        MlflowClient().set_registered_model_alias(name, alias, version.version)
    return Registered(info.model_uri, run.info.run_id, name, str(version.version), alias, check)


def resolve_model(model_uri: str) -> tuple[str, str]:
    """(registered version, URI that loads exactly it) for models:/name@alias or
    models:/name/version; any other URI is its own version."""
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        return model_uri, model_uri
    name, _, alias = model_uri[len("models:/"):].partition("@")
    if alias:
        version = str(MlflowClient().get_model_version_by_alias(name, alias).version)
        return version, f"models:/{name}/{version}"
    name, _, version = model_uri[len("models:/"):].rstrip("/").rpartition("/")
    MlflowClient().get_model_version(name, version)  # raises MlflowException when there is no such version
    return version, model_uri


def load_chain(model_uri: str):
    """A pyfunc chain from `models:/name@alias`, `models:/name/version` or a run URI."""
    import mlflow

    return mlflow.pyfunc.load_model(model_uri)
