"""Program session records, pain reports and plans in the real SQLite store, and through the real ingest."""
from __future__ import annotations

import json
import sqlite3
import time

import pytest

from runform.server import mqtt as m
from runform.server.ingest import Ingestor
from runform.server.storage import open_store

from .conftest import PASSWORD
from .test_plan_edge import publish


def record(key="e1", *, runner="ann", stage=1, pb=None, pa=None, end=100.0, final=False, run_time_s=30.0,
           program="demo-short"):
    return m.program_session_payload(runner, key, program=program, stage=stage, pain_before=pb, pain_after=pa,
                                     completed_fraction=run_time_s / 60.0, run_time_s=run_time_s,
                                     planned_run_time_s=60.0, run_steps=80, impact_sum_g=240.0, start_unix_s=10.0,
                                     end_unix_s=end, final=final)


def test_upsert_never_loses_pain_or_final(tmp_path):
    s = open_store(tmp_path / "p.db")
    s.upsert_program_session(record(pb=2, end=50.0, run_time_s=10.0))
    got = s.upsert_program_session(record(pb=None, end=100.0, run_time_s=30.0))  # newer, pain unknown to it
    assert got["pain_before"] == 2 and got["run_time_s"] == 30.0 and got["runner"] == "ann"
    s.upsert_program_session(record(pa=1, end=200.0, run_time_s=60.0, final=True))
    # a redelivered older message adds nothing but what it knows new (none here) and cannot un-finish it
    s.upsert_program_session(record(pb=5, pa=None, end=100.0, run_time_s=30.0, final=False))
    [r] = s.list_program_sessions("ann")
    assert (r["pain_before"], r["pain_after"], r["final"], r["run_time_s"]) == (2, 1, True, 60.0)
    assert r["completed_fraction"] == 1.0 and r["session_key"] == "e1" and r["stage"] == 1
    s.upsert_program_session({**record("e0", stage=2), "start_unix_s": 5.0})
    s.upsert_program_session(record("x", runner="bob"))
    assert [r["session_key"] for r in s.list_program_sessions("ann")] == ["e0", "e1"]  # oldest first
    assert [r["session_key"] for r in s.list_program_sessions("ann", limit=1)] == ["e1"]  # the newest
    assert s.list_program_sessions("ann", program="other") == []
    with pytest.raises(ValueError, match="pain_before"):
        s.upsert_program_session(record(pb=11))
    s.close()


def test_pain_reports_and_plans_are_durable(tmp_path):
    path = tmp_path / "p.db"
    s = open_store(path)
    ids = [s.add_pain_report("ann", 3, "before", author="ann", time_unix_s=1.0),
           s.add_pain_report("ann", 1, "after", author="pt", time_unix_s=2.0),
           s.add_pain_report("bob", 0, "after")]
    assert len(set(ids)) == 3
    for bad in [(11, "before"), (True, "before"), (2, "during")]:
        with pytest.raises(ValueError):
            s.add_pain_report("ann", *bad)
    plan = m.plan_payload("ann", program="demo-short", stage=1, n_stages=2, set_by="pt")
    s.put_plan("ann", plan, since_unix_s=123.0)
    s.put_plan("ann", {**plan, "stage": 2, "set_by": "progression"})  # since_unix_s kept
    s.close()
    s = open_store(path)  # reopened: everything is there
    reps = s.list_pain_reports("ann")
    assert [(r["pain_0_10"], r["when"], r["author"]) for r in reps] == [(3, "before", "ann"), (1, "after", "pt")]
    assert [r["pain_0_10"] for r in s.list_pain_reports("ann", limit=1)] == [1]
    assert [r["pain_0_10"] for r in s.list_pain_reports("ann", since_unix_s=1.5)] == [1]
    got = s.get_plan("ann")
    assert got["plan"]["stage"] == 2 and got["since_unix_s"] == 123.0 and s.get_plan("bob") is None
    assert [p["runner"] for p in s.list_plans()] == ["ann"]
    s.close()


def test_existing_database_gets_the_program_tables(tmp_path):
    """A database made before these tables existed (simulated by dropping them) is migrated when opened."""
    path = tmp_path / "old.db"
    s = open_store(path)
    sid = s.create_session("ann", {"source": "mqtt"})
    s.close()
    con = sqlite3.connect(path)
    for t in ("program_sessions", "pain_reports", "program_plans"):
        con.execute(f"DROP TABLE {t}")
    con.commit()
    con.close()
    s = open_store(path)
    assert s.get_session(sid) is not None and s.list_program_sessions("ann") == []
    s.upsert_program_session(record())
    assert len(s.list_program_sessions("ann")) == 1 and s.integrity_check() == []
    s.close()


def test_ingest_stores_program_records_and_rejects_bad_ones(mosquitto, tmp_path):
    store = open_store(tmp_path / "ingest.db")
    runner = f"ing{time.monotonic_ns() % 10**9}"
    ing = Ingestor(store, port=mosquitto.port, username="edge", password=PASSWORD,
                   client_id=f"rf-ingest-plan-{runner}", session_expiry_s=0).start()
    try:
        assert ing.wait_connected(10)  # connected and subscribed
        topic = m.program_topic(runner)
        assert publish(mosquitto.port, topic, m.encode_json(record(runner=runner, pb=1))) == "Success"
        assert publish(mosquitto.port, topic, m.encode_json(record(runner=runner, pa=2, end=300.0, final=True))) \
            == "Success"
        assert publish(mosquitto.port, topic, json.dumps({**record(runner=runner), "pain_after": 12}).encode()) \
            == "Success"
        assert publish(mosquitto.port, topic, m.encode_json(record(runner="someone-else"))) == "Success"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (ing.counters_["rejected_payload"] < 2
                                               or ing.counters_["committed"] < 4):
            time.sleep(0.05)
        assert ing.counters_["rejected_payload"] == 2 and ing.counters_["program_sessions_stored"] == 2
        [r] = store.list_program_sessions(runner)
        assert (r["pain_before"], r["pain_after"], r["final"]) == (1, 2, True)
        assert store.list_program_sessions("someone-else") == []
        assert store.list_sessions([runner]) == []  # a record is runner-level: no data session opened for it
    finally:
        ing.stop()
        store.close()
