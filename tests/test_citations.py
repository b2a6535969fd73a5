"""Verified citations: sentences of an answer checked against source sentences with the real
packaged MiniLM embedding model and word overlap; markers the model wrote are kept only where
their source supports the sentence."""
from __future__ import annotations

import numpy as np
import pytest

from lakerag.chain.citations import cited_answer, source_sentences, split_sentences, verify
from lakerag.weights import load_sentence_model
from lakerag.settings import CitationSettings

SETTINGS = CitationSettings()
SOURCES = (
    source_sentences(1, [("The command dpkg --remove foo removes the package foo but keeps its configuration "
                          "files. Use dpkg --purge foo to remove the package and its configuration files.", 40)])
    + source_sentences(2, [("A Debian binary package is an ar archive. Its name normally ends in .deb.", 35),
                           ("The archive holds a control tarball and a data tarball.", 36)])
)


def embed(texts: list[str]) -> np.ndarray:
    return load_sentence_model("all-MiniLM-L6-v2").encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                                           show_progress_bar=False)


def test_sentences_are_split_at_ends_and_lines_and_a_code_block_stays_whole():
    text = "Use dpkg, e.g. dpkg -i, version 11.1 here. Then this!\n\n```\napt update\napt upgrade\n```\n- one item\n- two"
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "Use dpkg, e.g. dpkg -i, version 11.1 here.", "Then this!", "```\napt update\napt upgrade\n```",
        "- one item", "- two"]


def test_source_sentences_keep_their_source_number_and_paragraph_page():
    assert [(s.source, s.page, s.text) for s in SOURCES][2:] == [
        (2, 35, "A Debian binary package is an ar archive."), (2, 35, "Its name normally ends in .deb."),
        (2, 36, "The archive holds a control tarball and a data tarball.")]


def test_a_supported_sentence_carries_its_source_page_and_quote_and_an_invented_one_is_unsupported():
    answer = ("To remove the package foo together with its configuration files, use dpkg --purge foo. "
              "The package manager also sends an email to the system administrator every night.")
    supported, invented = verify(answer, SOURCES, embed, SETTINGS, source_count=2)
    assert (supported.supported, supported.source, supported.page) == (True, 1, 40)
    assert supported.quote == "Use dpkg --purge foo to remove the package and its configuration files."
    assert supported.similarity >= SETTINGS.min_similarity and supported.overlap >= SETTINGS.min_overlap
    assert invented.claim and not invented.supported and (invented.source, invented.quote) == (0, "")


def test_a_marker_on_a_source_that_does_not_support_its_sentence_is_dropped_and_the_right_one_added():
    answer = "A Debian binary package is an ar archive [1]. dpkg --remove foo keeps the configuration files of foo [2]. Yes [2]."
    verdicts = verify(answer, SOURCES, embed, SETTINGS, source_count=2)
    assert [(v.written, v.sources, v.claim) for v in verdicts] == [([1], [2], True), ([2], [1], True), ([2], [], False)]
    assert cited_answer(answer, verdicts) == (
        "A Debian binary package is an ar archive [2]. dpkg --remove foo keeps the configuration files of foo [1]. Yes.")


def test_a_marker_the_source_supports_stays_where_the_model_wrote_it():
    answer = "According to [2], a Debian binary package is an ar archive."
    verdicts = verify(answer, SOURCES, embed, SETTINGS, source_count=2)
    assert cited_answer(answer, verdicts) == answer


@pytest.mark.parametrize("answer", ["", "Yes.", "I see.", "5.3 How can I remove a package with its configuration files?"])
def test_short_or_empty_answers_and_echoed_questions_have_no_claims(answer):
    assert not any(v.claim for v in verify(answer, SOURCES, embed, SETTINGS, source_count=2))
