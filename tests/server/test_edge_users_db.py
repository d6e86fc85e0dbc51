"""`runform run --users-db`: the edge's second authorisation check uses the same user store as the API."""
import argparse

from runform.server import _cmd_edge
from runform.server.auth import open_user_store


def test_edge_access_comes_from_the_user_store(tmp_path):
    db = tmp_path / "users.db"
    store = open_user_store(db)
    store.add_user("alice", "runner", "alice-password-1")
    store.add_user("bob", "runner", "bob-password-1")
    store.add_user("pt", "therapist", "pt-password-1")
    store.assign("pt", "alice")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    _cmd_edge.register(sub)
    args = parser.parse_args(["run", "--source", "sim", "--users-db", str(db), "--no-mqtt"])
    cfg = _cmd_edge._configs(args, ["alice", "bob"], 1883)
    access = cfg["alice"].access
    assert access is not None
    assert access.may_control("pt", "alice")
    assert not access.may_control("pt", "bob")  # not assigned
    assert not access.may_control("bob", "alice")  # another runner
    assert not access.may_control("mallory", "alice")  # unknown user
    # without --users-db the edge trusts the broker's ACL
    args = parser.parse_args(["run", "--source", "sim", "--no-mqtt"])
    assert _cmd_edge._configs(args, ["alice"], 1883)["alice"].access is None
