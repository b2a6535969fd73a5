"""False positives of the prompt-injection screen: how many sentences of real documents the
screen (chain.injection_patterns) would remove from the prompt. Every match on a corpus
without injected text is a false positive. Reads silver_sections of a lake with delta-rs (no
engine). Prints the counts and each matched sentence; writes bench/results/injection_screen.json.

    make demo && .venv/bin/python bench/injection_screen.py [--lake-root lakehouse/demo]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import REPO, write_result  # noqa: E402
from deltalake import DeltaTable  # noqa: E402

from lakerag.chain.rag import SENTENCE, screen_instructions  # noqa: E402
from lakerag.settings import load_settings  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake-root", default=str(REPO / "lakehouse" / "demo"))
    parser.add_argument("--catalog", default="lakerag")
    parser.add_argument("--schema", default="dev")
    args = parser.parse_args()
    patterns = load_settings(REPO / "conf" / "pipeline.yml").chain.injection_patterns
    sections = DeltaTable(str(Path(args.lake_root) / args.catalog / args.schema / "silver_sections")).to_pandas(
        columns=["title", "text"])
    sentences = matched = 0
    for title, text in zip(sections["title"], sections["text"]):
        for sentence in SENTENCE.finditer(text):
            sentences += 1
            if screen_instructions(sentence.group(0), patterns)[1]:
                matched += 1
                print(f"removed from {title!r}: {sentence.group(0).strip()[:200]}")
    print(f"{len(sections)} sections, {sentences} sentences, {matched} removed by the screen "
          f"({matched / max(sentences, 1):.4%} false positives on a corpus without injections)")
    write_result("injection_screen", {"sections": len(sections), "sentences": sentences, "removed": matched})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
