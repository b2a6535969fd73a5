"""Settings files: the shipped one loads, mistakes get errors that name the key."""
from pathlib import Path

import pytest

from lakerag.settings import BronzeSettings, Settings, SettingsError, apply_overrides, load_settings

REPO = Path(__file__).resolve().parents[1]


def test_shipped_conf_loads_and_matches_defaults():
    assert load_settings(REPO / "conf" / "pipeline.yml") == Settings()


def test_override(tmp_path):
    conf = tmp_path / "p.yml"
    conf.write_text("bronze:\n  max_file_bytes: 42\n")
    assert load_settings(conf) == Settings(bronze=BronzeSettings(max_file_bytes=42))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("bronze:\n  max_bytes: 1\n", "bronze: unknown key(s) ['max_bytes']"),
        ("silverr: {}\n", "unknown key(s) ['silverr']"),
        ("bronze:\n  max_file_bytes: lots\n", "bronze.max_file_bytes: expected int"),
        ("bronze:\n  max_file_bytes: true\n", "bronze.max_file_bytes: expected int"),
        ("bronze: 3\n", "bronze: expected a mapping"),
        ("retrieval:\n  graph_edges: [links]\n", "retrieval.graph_edges: ['links'] are not edge kinds"),
        ("summaries:\n  fields: [questions, abstract]\n", "summaries.fields: ['questions', 'abstract'] must be"),
        ("retrieval:\n  backend: vector_search\n  vector_search_endpoint: e\nchain:\n  follow_links: 1\n",
         "chain.follow_links needs retrieval.backend: local"),
    ],
)
def test_mistakes_name_the_key(tmp_path, text, fragment):
    conf = tmp_path / "p.yml"
    conf.write_text(text)
    with pytest.raises(SettingsError, match=__import__("re").escape(fragment)):
        load_settings(conf)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(SettingsError, match="pass --conf"):
        load_settings(tmp_path / "nope.yml")


def test_overrides_change_one_setting_and_are_validated():
    settings = apply_overrides(Settings(), ["llm.backend=databricks", "llm.model=my-endpoint", "chain.k=6",
                                            "silver.strategies=[section]"])
    assert (settings.llm.backend, settings.llm.model, settings.chain.k, settings.silver.strategies) == (
        "databricks", "my-endpoint", 6, ("section",))
    with pytest.raises(SettingsError, match=r"no setting llm\.modle"):
        apply_overrides(Settings(), ["llm.modle=x"])
    with pytest.raises(SettingsError, match="expected SECTION.KEY=VALUE"):
        apply_overrides(Settings(), ["k=6"])
    with pytest.raises(SettingsError, match=r"chain\.k: expected int, got 'six'"):
        apply_overrides(Settings(), ["chain.k=six"])


def test_a_retired_key_is_ignored_with_a_warning_so_older_models_settings_still_load(caplog):
    from lakerag.settings import settings_from_dict

    settings = settings_from_dict({"chain": {"k": 3, "feedback_user_header": "X-Forwarded-Email"}})
    assert settings.chain.k == 3
    assert "chain.feedback_user_header is no longer used" in caplog.text
