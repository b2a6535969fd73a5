"""Secrets: an API key given through the environment reaches the endpoint in its header and
nowhere else: not in MLflow params, tags, metrics, the logged model's files, the tracking
database, or the logs of the run."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import mlflow
import pytest

from lakerag.chain.registry import register_chain
from lakerag.settings import ChainSettings, LLMSettings, Settings
from lakerag.tracking import configure_mlflow, use_experiment
from tests.scripted_http import ScriptedServer

SECRET = "sk-lakerag-test-0123456789abcdef"


@pytest.mark.slow
def test_an_api_key_is_sent_but_never_logged(corpus_index, tmp_path, monkeypatch, caplog, capfd, default_mlflow_store):
    monkeypatch.setenv("LAKERAG_TEST_KEY", SECRET)
    root = tmp_path / "mlflow"
    configure_mlflow(None, None, root)
    use_experiment("lakerag-secrets", root)
    caplog.set_level(logging.DEBUG)
    try:
        # three calls: MLflow runs the input example through the agent when it saves it and again
        # when it validates the logged model's serving example, then our check
        with ScriptedServer([(200, "dpkg installs packages [1].")] * 3) as server:
            settings = Settings(llm=LLMSettings(backend="openai", model="test-model", base_url=server.base_url,
                                                api_key_env="LAKERAG_TEST_KEY", max_retries=0),
                                chain=dataclasses.replace(ChainSettings(), rerank=False))
            done = register_chain(settings, corpus_index[2], "secret_chain", "challenger", "What is dpkg?")
            assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}" and len(server.requests) == 3
        run = mlflow.get_run(done.run_id)
        assert SECRET not in repr((run.data.params, run.data.tags, run.data.metrics))
        files = [path for path in root.rglob("*") if path.is_file()]
        assert any(path.name == "mlflow.db" for path in files) and any(path.name == "MLmodel" for path in files)
        leaks = [str(path) for path in files if SECRET.encode() in path.read_bytes()]
        assert leaks == []
        out, err = capfd.readouterr()
        assert SECRET not in out + err + caplog.text
        # what the logged settings do hold: the variable's name, so the key can be found again
        assert "LAKERAG_TEST_KEY" in (Path(mlflow.artifacts.download_artifacts(done.model_uri)) / "MLmodel").read_text()
    finally:
        mlflow.set_tracking_uri(default_mlflow_store)
