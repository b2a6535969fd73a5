"""The package's layering: the query side (what a served chain loads) never imports the build
side, nor pyspark, pypdf or the chunker; and the whole serving closure imports with them blocked."""
from __future__ import annotations

import subprocess
import sys

from lakerag.chain.requirements import LIB, module_imports, query_side_files

BUILD_SIDE = ("lakerag.lakehouse", "lakerag.ingest", "lakerag.enrich", "lakerag.evaluation", "lakerag.finetune",
              "lakerag.cli")
BLOCKED = ("pyspark", "pypdf", "pypdfium2", "pytesseract", "semantic_text_splitter")


def test_no_query_side_module_imports_a_build_side_module_or_spark_or_the_pdf_parser():
    offending = {str(file.relative_to(LIB)): sorted(name for name in module_imports(file)
                                                    if name.startswith(BUILD_SIDE) or name.split(".")[0] in BLOCKED)
                 for file in query_side_files()}
    assert {file: names for file, names in offending.items() if names} == {}


def test_the_layering_check_sees_a_build_side_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from lakerag.lakehouse.tables import ACTIVE\n    import pyspark.sql\n")
    assert module_imports(module) == {"lakerag.lakehouse.tables", "pyspark.sql"}


BLOCKING_IMPORT = f"""
import importlib, pkgutil, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Blocked())
import lakerag
for package in ("retrieval", "chain", "serving", "access"):
    root = importlib.import_module("lakerag." + package)
    for module in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
        importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name.split(".")[0] in {BLOCKED!r}))
"""


def test_the_whole_serving_closure_imports_with_pyspark_pypdf_and_the_chunker_blocked():
    done = subprocess.run([sys.executable, "-c", BLOCKING_IMPORT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
