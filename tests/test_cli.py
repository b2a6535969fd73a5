"""The command line and the job scripts, run as a user runs them."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lakerag.cli import build_parser
from tests.conftest import put

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_help_lists_tasks_and_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["ingest-bronze", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--landing", "--engine", "--catalog", "--schema", "--lake-root", "--conf"):
        assert flag in text


def test_unknown_engine_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest-bronze", "--engine", "duckdb"])
    assert "invalid choice: 'duckdb'" in capsys.readouterr().err


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKERAG_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.slow
def test_job_script_ingests_then_reruns_without_changes(tmp_path, landing):
    put(landing, "a.pdf", "minimal-document.pdf")
    put(landing, "b.pdf", b"not a pdf")
    cmd = [sys.executable, str(REPO / "jobs" / "ingest_bronze.py"), "--landing", str(landing),
           "--lake-root", str(tmp_path / "lake"), "--catalog", "cli", "--schema", "s1"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert first.returncode == 0, first.stderr
    assert re.search(r"bronze_documents\s+new\s+1\n", first.stdout)
    assert re.search(r"bronze_quarantine\s+new\s+1\n", first.stdout)
    assert "not_pdf" in first.stdout
    assert "engine ready in" in first.stderr

    second = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "no changes: bronze tables left as they were" in second.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="spark-submit needs a Java runtime")
def test_spark_submit_runs_the_job(tmp_path, landing):
    put(landing, "a.pdf", "minimal-document.pdf")
    cmd = [str(BIN / "spark-submit"), str(REPO / "jobs" / "ingest_bronze.py"), "--landing", str(landing),
           "--lake-root", str(tmp_path / "lake"), "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"bronze_documents\s+new\s+1\n", done.stdout)


def test_missing_landing_folder_says_what_to_do(tmp_path):
    cmd = [sys.executable, "-m", "lakerag.cli", "ingest-bronze", "--landing", str(tmp_path / "nope"),
           "--lake-root", str(tmp_path / "lake")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert done.returncode != 0
    assert "does not exist: check --landing" in done.stderr
