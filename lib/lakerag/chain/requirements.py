"""The served chain's pip requirements: the distributions the query side imports (read from its
source, lazy imports included) plus the packages that carry the weights the settings name, each
pinned to the version installed here."""
from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

from lakerag.settings import Settings
from lakerag.weights import weight_packages

LIB = Path(__file__).resolve().parents[1]
# What a served model loads: the query-side packages and the shared modules they use.
QUERY_SIDE = ("retrieval", "chain", "serving", "access", "settings.py", "weights.py", "tracking.py",
              "markdown_tables.py")
# Pulled in by sentence-transformers rather than imported by us, and pinned on purpose: an
# unpinned torch resolves to a multi-GB CUDA build; onnx is what torch.onnx writes the
# query encoders' exports with (retrieval/encoders.py), imported by torch, not by us.
ALSO_PINNED = ("torch", "onnx")


def query_side_files() -> list[Path]:
    """The query side's source files."""
    files: list[Path] = []
    for entry in QUERY_SIDE:
        path = LIB / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def module_imports(file: Path) -> set[str]:
    """Every module name `file` imports (dotted, as written), lazy imports included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def imported_modules(files: list[Path]) -> set[str]:
    """Top-level names of the modules imported anywhere in `files` (not lakerag, not stdlib)."""
    names = {name.split(".")[0] for file in files for name in module_imports(file)}
    return {n for n in names if n != "lakerag" and n not in sys.stdlib_module_names and n != "__future__"}


def _distributions(modules: set[str]) -> set[str]:
    """The installed distributions that provide `modules` (see CHOSEN where several do)."""
    provided = importlib.metadata.packages_distributions()
    found: set[str] = set()
    for module in modules:
        if module in CHOSEN:
            found.update(CHOSEN[module])
        elif module in provided:
            found.update(provided[module][:1])
    return found


# Modules several installed distributions provide: the one the served chain needs (the
# `databricks` namespace: the Vector Search client and the SDK that reads Model Serving's caller;
# `mlflow`: the full package, whose tracking store reads the sqlite registry, not mlflow-skinny).
CHOSEN = {"databricks": ["databricks-vectorsearch", "databricks-sdk"], "mlflow": ["mlflow"]}
# What the transformers backend loads without importing it: GGUF reading and device placement.
TRANSFORMERS_EXTRAS = ("accelerate", "gguf")


def _pin(distribution: str) -> str:
    """name==version, without a local label (torch's +cpu is this machine's wheel, not an index version)."""
    return f"{distribution}=={importlib.metadata.version(distribution).split('+')[0]}"


def requirements(settings: Settings) -> list[str]:
    """Pinned requirements of the served chain with these settings."""
    distributions = _distributions(imported_modules(query_side_files())) | set(ALSO_PINNED)
    models = [settings.models.embedding]
    if settings.retrieval.reranker == "rescore":
        models.append(settings.models.rerank)
    if settings.llm.backend in ("llamacpp", "transformers"):
        models.append(settings.llm.model)
    if settings.llm.backend == "transformers":
        distributions.update(TRANSFORMERS_EXTRAS)
    weights = [p for model in models for p in weight_packages(model) if p not in distributions]
    return sorted(_pin(d) for d in distributions) + [_pin(p) for p in dict.fromkeys(weights)]
