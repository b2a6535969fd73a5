"""Packaged model lookup: assembling split weights is refused unless the digest matches."""
import hashlib

import pytest

from lakerag.weights import concatenate_verified, llm_path, model_path


def test_pieces_are_joined_when_the_digest_matches(tmp_path):
    pieces = [tmp_path / "a.001", tmp_path / "a.002"]
    pieces[0].write_bytes(b"first-")
    pieces[1].write_bytes(b"second")
    target = tmp_path / "model.bin"
    concatenate_verified(pieces, hashlib.sha256(b"first-second").hexdigest(), target)
    assert target.read_bytes() == b"first-second"


def test_pieces_with_another_digest_are_refused_and_leave_nothing(tmp_path):
    piece = tmp_path / "a.001"
    piece.write_bytes(b"tampered")
    target = tmp_path / "model.bin"
    with pytest.raises(RuntimeError, match="reinstall the part packages"):
        concatenate_verified([piece], hashlib.sha256(b"original").hexdigest(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.001"]


def test_unknown_model_names_say_what_is_accepted(tmp_path):
    with pytest.raises(FileNotFoundError, match="packaged model"):
        model_path(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="qwen2.5-coder-0.5b-instruct"):
        llm_path("gpt-5")
