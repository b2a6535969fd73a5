"""Who may read what, without Spark: path rules, the users file and its tokens (compared in
constant time), a trusted proxy, the bind check, Databricks' caller (the exact request sent),
and the retriever's group filter inside every search mode."""
from __future__ import annotations

import dataclasses
import hmac

import pytest

from lakerag.access import identity as identity_module
from lakerag.access.identity import (ANONYMOUS, Authenticator, Identity, ProxyTrust, UserDirectory, add_user,
                                     request_identity, token_digest)
from lakerag.access.permissions import can_read, document_groups, landing_relative
from lakerag.chain.registry import auth_policy
from lakerag.retrieval.retriever import Filters, Retriever
from lakerag.retrieval.vector_search import vector_search_filters
from lakerag.serving.loadtest import LoopbackServer
from lakerag.settings import AccessSettings, RetrievalSettings, Settings, SettingsError, settings_from_dict
from lakerag.weights import load_sentence_model
from tests.test_ranking import MINILM, tiny_index

RULES = {"hr/": ["hr"], "hr/legal/": ["legal", "hr"]}


@pytest.mark.parametrize(("path", "groups"), [
    ("hr/pay.pdf", ["hr"]),
    ("hr/legal/contract.pdf", ["hr", "legal"]),  # the longest prefix wins
    ("manuals/debian-faq.pdf", ["users"]),  # no rule: the default
    ("hrm/notes.pdf", ["users"]),  # a prefix is text: "hr/" is not "hrm/"
])
def test_document_groups_come_from_the_longest_matching_prefix(path, groups):
    assert document_groups(path, RULES, ("users",)) == groups


def test_landing_relative_paths():
    assert landing_relative("/data/landing/hr/pay.pdf", "/data/landing/") == "hr/pay.pdf"
    assert landing_relative("/data/landing/hr/pay.pdf", "file:/data/landing") == "hr/pay.pdf"
    assert landing_relative("s3://b/land/hr/x.pdf", "s3://b/land") == "hr/x.pdf"
    assert landing_relative("/elsewhere/x.pdf", "/data/landing") == "/elsewhere/x.pdf"


def test_can_read_needs_one_shared_group():
    assert can_read(["hr"], ["hr", "users"]) and not can_read(["hr"], ["users"]) and not can_read([], ["users"])


def test_rules_are_validated():
    with pytest.raises(SettingsError, match="access.rules"):
        settings_from_dict({"access": {"rules": {"hr/": "hr"}}})
    with pytest.raises(SettingsError, match="trusted_proxies"):
        settings_from_dict({"access": {"proxy_user_header": "X-Forwarded-Email"}})
    assert settings_from_dict({"access": {"rules": RULES}}).access.rules == RULES


def test_users_file_stores_digests_and_authenticates_tokens(tmp_path):
    users = tmp_path / "users.yml"
    alice = add_user(users, "alice@example.com", ["hr"])
    bob = add_user(users, "bob@example.com", [])
    assert alice not in users.read_text() and token_digest(alice).hex() in users.read_text()
    assert users.stat().st_mode & 0o077 == 0  # readable by its owner only
    directory = UserDirectory.load(users)
    assert directory.authenticate(alice) == Identity("alice@example.com", ("hr", "users"))
    assert directory.authenticate(bob) == Identity("bob@example.com", ("users",))
    assert directory.authenticate(alice[:-1] + "x") is None and directory.authenticate("") is None
    with pytest.raises(LookupError, match="unknown user 'carol'"):
        directory.identity("carol")


def test_token_check_compares_every_digest_in_constant_time(tmp_path, monkeypatch):
    users = tmp_path / "users.yml"
    tokens = [add_user(users, name, []) for name in ("a", "b", "c")]
    directory = UserDirectory.load(users)
    compared, original = [], hmac.compare_digest

    def spy(left, right):
        compared.append((len(left), len(right)))
        return original(left, right)

    monkeypatch.setattr(identity_module.hmac, "compare_digest", spy)
    # A token matching all but its last character, a wrong one, and the first user's: the same
    # work each time (every digest, fixed-length digests, no early exit on the match).
    for token in (tokens[0][:-1] + "?", "wrong", tokens[0]):
        compared.clear()
        directory.authenticate(token)
        assert compared == [(32, 32)] * 3


def test_a_proxy_is_believed_from_its_network_only():
    proxy = ProxyTrust("X-Forwarded-Email", "X-Forwarded-Groups", ProxyTrust.from_settings(
        AccessSettings(proxy_user_header="X-Forwarded-Email", trusted_proxies=("10.0.0.0/8",))).networks)
    headers = {"X-Forwarded-Email": "alice@example.com", "X-Forwarded-Groups": "hr, legal"}
    assert proxy.identity("10.1.2.3", headers) == Identity("alice@example.com", ("hr", "legal", "users"))
    assert proxy.identity("192.168.0.9", headers) is None
    assert proxy.identity("10.1.2.3", {}) is None


def test_the_server_refuses_a_public_address_without_authentication(tmp_path):
    none = Authenticator(None, None)
    none.check_bind("127.0.0.1")
    none.check_bind("localhost")
    none.check_bind("::1")
    with pytest.raises(ValueError, match="refusing to serve on 0.0.0.0 without authentication.*access.users_file"):
        none.check_bind("0.0.0.0")
    add_user(tmp_path / "u.yml", "alice", [])
    Authenticator(UserDirectory.load(tmp_path / "u.yml"), None).check_bind("0.0.0.0")
    assert none.identify("127.0.0.1", {}, None) == ANONYMOUS


def test_request_identity_from_custom_inputs_and_refuses_a_malformed_one():
    assert request_identity({}, AccessSettings()) == ANONYMOUS
    claimed = {"identity": {"user": "alice", "groups": ["hr"]}}
    assert request_identity(claimed, AccessSettings()) == Identity("alice", ("hr", "users"))
    with pytest.raises(ValueError, match="custom_inputs.identity"):
        request_identity({"identity": {"groups": ["hr"]}}, AccessSettings())


def test_databricks_identity_reads_the_caller_from_scim_me(monkeypatch):
    """Outside Model Serving the SDK uses the default credentials: here a token for a local
    stand-in of the workspace, which checks the exact request."""
    seen = []

    def respond(path, headers, body):
        seen.append((path, headers.get("Authorization"), body))
        return 200, {"userName": "alice@example.com", "groups": [{"display": "hr"}, {"display": "users"}]}, {}

    with LoopbackServer(respond) as workspace:
        monkeypatch.setenv("DATABRICKS_HOST", workspace.base_url.removesuffix("/v1"))
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-test")
        for name in ("DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
            monkeypatch.delenv(name, raising=False)
        caller = request_identity({"identity": {"user": "mallory", "groups": ["hr"]}},
                                  AccessSettings(identity="databricks"))
        # in a job (not Model Serving) the identity the job passed counts; without one, the job's own
        assert caller == Identity("mallory", ("hr", "users"))
        assert request_identity({}, AccessSettings(identity="databricks")) == Identity("alice@example.com",
                                                                                      ("hr", "users"))
    # (the SDK first looks for /.well-known/databricks-config; the API call is this one)
    assert [(path.split("?")[0], auth, body) for path, auth, body in seen if path.startswith("/api/")] == [
        ("/api/2.0/preview/scim/v2/Me", "Bearer dapi-test", None)]


def test_in_model_serving_the_request_claim_is_ignored(monkeypatch):
    monkeypatch.setattr(identity_module, "in_model_serving", lambda: True)
    monkeypatch.setattr(identity_module, "databricks_caller", lambda: Identity.of("caller@example.com"))
    claimed = {"identity": {"user": "mallory", "groups": ["hr"]}}
    assert request_identity(claimed, AccessSettings(identity="databricks")) == Identity.of("caller@example.com")


def test_vector_search_query_carries_the_readers_groups():
    assert vector_search_filters(Filters(groups=("hr", "users")))["groups"] == ["hr", "users"]
    assert "groups" not in vector_search_filters(Filters())


def test_databricks_chain_asks_for_the_callers_identity_scope():
    settings = dataclasses.replace(Settings(), access=AccessSettings(identity="databricks"),
                                   retrieval=dataclasses.replace(RetrievalSettings(), backend="vector_search",
                                                                 vector_search_endpoint="vs",
                                                                 vector_search_index="c.s.gold_vs_index"))
    policy = auth_policy(settings).to_dict()
    assert policy["user_auth_policy"]["api_scopes"] == ["iam.current-user:read"]
    assert policy["system_auth_policy"]["resources"]["databricks"] == {"vector_search_index": [{"name": "c.s.gold_vs_index"}]}
    assert auth_policy(Settings()) is None


def test_retrieval_never_scores_a_chunk_the_reader_may_not_read(tmp_path):
    texts = ["salary bands are reviewed every march", "the office opens at eight", "salary of interns",
             "the canteen menu"]
    vectors = load_sentence_model(MINILM).encode(texts, normalize_embeddings=True)
    folder = tiny_index(tmp_path / "idx", texts, vectors, doc_ids=["hr1", "pub", "hr2", "pub"],
                        groups=[["hr"], ["users"], ["hr", "legal"], ["users"]])
    retriever = Retriever(folder, dataclasses.replace(RetrievalSettings(), reranker="none"))
    staff, manager = Filters(groups=("users",)), Filters(groups=("hr", "users"))
    for mode in ("dense", "bm25", "hybrid"):
        assert {h.doc_id for h in retriever.search("salary bands", k=4, mode=mode)} >= {"hr1"}, mode
        assert {h.doc_id for h in retriever.search("salary bands", k=4, mode=mode, filters=staff)} <= {"pub"}, mode
        assert retriever.search("salary bands", k=1, mode=mode, filters=manager)[0].doc_id == "hr1", mode
        assert retriever.search("salary", k=4, mode=mode, filters=Filters(groups=())) == [], mode
    # the dense search itself never returns the forbidden rows, even the query's exact text
    mask = staff.mask(retriever.chunks)
    assert sorted(row for row, _ in retriever.dense_ranking(vectors[:1], 4, mask)) == [1, 3]
    assert [d["doc_id"] for d in retriever.documents(("users",))] == ["pub"]
    assert sorted(d["doc_id"] for d in retriever.documents(("legal", "users"))) == ["hr2", "pub"]


def test_serve_refuses_a_public_address_before_loading_anything(tmp_path, monkeypatch, capsys):
    from lakerag.cli import main

    monkeypatch.delenv("LAKERAG_USERS_FILE", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--lake-root", str(tmp_path)]) == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in capsys.readouterr().err


def test_search_as_a_user_shows_only_what_their_groups_may_read(tmp_path, capsys):
    from lakerag.cli import main

    texts = ["salary bands are reviewed every march", "the office opens at eight"]
    vectors = load_sentence_model(MINILM).encode(texts, normalize_embeddings=True)
    folder = tiny_index(tmp_path / "idx", texts, vectors, doc_ids=["hr1", "pub"], groups=[["hr"], ["users"]])
    users = tmp_path / "users.yml"
    add_user(users, "alice", ["hr"])
    add_user(users, "bob", [])
    found = {}
    for user in ("alice", "bob"):
        assert main(["search", "salary bands", "--index", str(folder), "--user", user, "--no-rerank",
                     "--set", f"access.users_file={users}"]) == 0
        found[user] = [line.split("(")[1].split(")")[0] for line in capsys.readouterr().out.splitlines()
                       if line[:1].isdigit()]
    assert found == {"alice": ["hr1.pdf", "pub.pdf"], "bob": ["pub.pdf"]}
    assert main(["search", "salary", "--index", str(folder), "--user", "carol",
                 "--set", f"access.users_file={users}"]) == 2
    assert "unknown user 'carol'" in capsys.readouterr().err
