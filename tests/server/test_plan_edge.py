"""The edge follows the server's retained plan (runform/v1/{runner}/plan) and publishes program session records:
real Mosquitto, the real edge pipeline over a simulated sensor (steps scripted: the DSP is tested in tests/dsp)."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from runform.server import mqtt as m
from runform.server.edge import Edge, RunnerConfig, RunnerPipeline, SimulatorSource
from runform.server.programs import load_program

from .conftest import PASSWORD, ScriptedStepDetector, publish_one

pytest.importorskip("runform.firmware_bridge.simulator")


def settings(port, user="edge"):
    return m.MqttSettings(port=port, username=user, password=PASSWORD, reconnect_min_s=0.2, reconnect_max_s=1.0)


def publish(port, topic, payload: bytes, *, user="edge", retain=False, qos=1) -> str | None:
    return publish_one(port, user, topic, payload, qos=qos, retain=retain)


def plan(runner, program="demo-short", stage=1, *, n_stages=2, cadence=None, impact=None, set_by="pt"):
    return m.plan_payload(runner, program=program, stage=stage, n_stages=n_stages if program else None,
                          targets={"cadence_spm": cadence}, limits={"impact_limit_g": impact}, set_by=set_by)


def unique(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns() % 10**9}"  # the session broker keeps retained plans between tests


class GatedSource:
    """A simulated sensor (as fast as possible) that starts streaming when ``start()`` is true and, at stream
    second ``pause_at_s`` after its first block, calls ``at_pause()`` and waits for ``resume()`` (a live change
    applied at a known point of the session; waiting on conditions, never on fixed delays)."""

    def __init__(self, runner, duration_s, start, *, pause_at_s=None, at_pause=None, resume=None):
        self.src = SimulatorSource(runner, sites=("sacrum",), duration_s=duration_s, speed=0, seed=4,
                                   sampling_rate_hz=100.0, packet_samples=10)
        self.runner, self.sensors = runner, self.src.sensors
        self.start, self.pause_at_s, self.at_pause, self.resume = start, pause_at_s, at_pause, resume

    def link_stats(self):
        return self.src.link_stats()

    async def aclose(self):
        await self.src.aclose()

    async def _until(self, cond, what):
        deadline = time.monotonic() + 20
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def __aiter__(self):
        await self._until(self.start, "the start condition")
        t0 = None
        async for item in self.src:
            t = float(item.block.time_s[-1])
            t0 = t if t0 is None else t0
            if self.pause_at_s is not None and t - t0 >= self.pause_at_s:
                self.pause_at_s = None
                await asyncio.to_thread(self.at_pause)
                await self._until(self.resume, "the live change")
            yield item


def payloads(sub, suffix):
    return [json.loads(x.payload) for x in sub.on(suffix) if x.payload]


def test_edge_follows_retained_plan_then_a_live_change(mosquitto, mqtt_sub):
    runner = unique("rtr")
    sub = mqtt_sub(mosquitto.port, "edge", topics=[m.runner_filter(runner)]).start()
    # the therapist's plan is on the broker before the edge starts: stage 2 of demo-short, cadence target 172
    assert publish(mosquitto.port, m.plan_topic(runner), m.encode_json(plan(runner, stage=2, cadence=172)),
                   retain=True) == "Success"
    holder: dict = {}

    def pipe() -> RunnerPipeline:
        return holder["edge"].pipelines[runner]

    def change_stage():  # 15 s into stage 2 (10 s walk + 5 s run done): the therapist moves the runner to stage 1
        assert publish(mosquitto.port, m.plan_topic(runner), m.encode_json(plan(runner, stage=1)),
                       retain=True) == "Success"

    src = GatedSource(runner, 125.0, lambda: pipe().plan is not None, pause_at_s=15.0, at_pause=change_stage,
                      resume=lambda: pipe().program is not None and pipe().program.stage_index == 0)
    edge = holder["edge"] = Edge([src], {runner: RunnerConfig(runner, mqtt=settings(mosquitto.port))},
                                 detector_factory=ScriptedStepDetector)
    stats = asyncio.run(edge.run())[runner]
    assert sub.wait_for(lambda x: x.topic.endswith("/status") and b'"offline"' in x.payload)
    assert sub.wait_for(lambda x: x.topic.endswith("/program") and b'"final":true' in x.payload
                        and b'"stage":1,' in x.payload)
    assert stats["plans_applied"] == 2 and stats["plans_rejected"] == 0
    # announced like an interval change: one spoken program cue per stage loaded, before the interval cue
    cues = payloads(sub, "/cues")
    prog_cues = [c for c in cues if c["kind"] == "program"]
    assert [c["code"] for c in prog_cues] == ["program_stage", "program_stage"]
    assert "Stage 2 of 2: demo stage 2" in prog_cues[0]["text"] and "Stage 1 of 2: demo stage 1" in prog_cues[1]["text"]
    assert cues.index(prog_cues[0]) < cues.index(next(c for c in cues if c["kind"] == "interval"))
    # the status shows program and stage (1-based) from the plan
    online = [s for s in payloads(sub, "/status") if s["state"] == "online" and s.get("program")]
    assert {s["program"]["stage"] for s in online} == {1, 2}
    assert online[-1]["program"] == {**online[-1]["program"], "name": "demo-short", "stage": 1, "n_stages": 2,
                                     "source": "plan"}
    assert online[-1]["target_cadence_spm"] == 172.0  # the first plan's target stays the base (second: none)
    replies = [r for r in payloads(sub, "control/reply") if r["command"] == "plan"]
    assert [r["ok"] for r in replies] == [True, True] and replies[0]["issuer"] == "pt"
    # records: the stage-2 run was cut short (final, 5 s of 120 s run), stage 1 ran to the end
    recs = payloads(sub, "/program")
    by_key: dict[str, list] = {}
    for r in recs:
        by_key.setdefault(r["session_key"], []).append(r)
    assert len(by_key) == 2
    first, second = sorted(by_key.values(), key=lambda rs: rs[0]["start_unix_s"])
    assert first[-1]["stage"] == 2 and first[-1]["final"] and 4.0 <= first[-1]["run_time_s"] <= 6.5
    assert first[-1]["planned_run_time_s"] == 120.0
    last = second[-1]
    assert last["stage"] == 1 and last["final"] and last["completed_fraction"] == 1.0
    assert last["run_time_s"] == last["planned_run_time_s"] == 60.0
    assert last["session_key"].startswith(first[-1]["session_key"]) and last["session_key"].endswith(".2")
    assert last["run_steps"] > 0 and last["impact_sum_g"] == pytest.approx(3.0 * last["run_steps"])
    assert any(not r["final"] and r["completed_fraction"] == 1.0 for r in second)  # published when the stage ended
    for r in recs:
        m.validate(r, m.SCHEMAS[m.SCHEMA_PROGRAM_SESSION])


def test_malformed_retained_plan_rejected_then_valid_one_applied(mosquitto, mqtt_sub):
    runner = unique("rtrbad")
    sub = mqtt_sub(mosquitto.port, "edge", topics=[m.runner_filter(runner)]).start()
    assert publish(mosquitto.port, m.plan_topic(runner), b'{"schema": "runform.plan.v1", "runner": ',
                   retain=True) == "Success"
    holder: dict = {}

    def therapist_fixes_it():  # once the edge has answered the broken plan, a valid one follows
        if sub.wait_for(lambda x: x.topic.endswith("control/reply") and b'"ok":false' in x.payload, timeout_s=20):
            holder["sent"] = publish(mosquitto.port, m.plan_topic(runner), m.encode_json(plan(runner, stage=1)),
                                     retain=True)

    fixer = threading.Thread(target=therapist_fixes_it, daemon=True)
    fixer.start()
    src = GatedSource(runner, 5.0, lambda: holder["edge"].pipelines[runner].plan is not None)
    edge = holder["edge"] = Edge([src], {runner: RunnerConfig(runner, mqtt=settings(mosquitto.port))},
                                 detector_factory=ScriptedStepDetector)
    stats = asyncio.run(edge.run())[runner]
    fixer.join(5)
    assert holder["sent"] == "Success"
    assert stats["plans_rejected"] == 1 and stats["plans_applied"] == 1
    replies = [r for r in payloads(sub, "control/reply") if r["command"] == "plan"]
    assert replies[0]["ok"] is False and "plan rejected: not valid UTF-8 JSON" in replies[0]["reason"]
    assert replies[-1]["ok"] is True
    assert sub.wait_for(lambda x: x.topic.endswith("/status") and b'"offline"' in x.payload)
    final = [s for s in payloads(sub, "/status") if s["state"] == "offline"][-1]
    assert final["counters"]["plans_rejected"] == 1 and final["program"]["stage"] == 1


def _pipe(runner="ann", **kw) -> RunnerPipeline:
    return RunnerPipeline(RunnerConfig(runner, **kw), [], detector_factory=ScriptedStepDetector)


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xfe", "not valid UTF-8 JSON"),
    (json.dumps({"schema": "runform.plan.v1", "runner": "ann"}).encode(), "missing required field"),
    (m.encode_json(plan("bob")), "plan is for runner 'bob'"),
    (m.encode_json(plan("ann", program="no-such-program")), "no program 'no-such-program'"),
    (m.encode_json(plan("ann", program="../../etc/passwd")), "invalid"),
    (m.encode_json(plan("ann", stage=3)), "stage 3 out of range: demo-short has 2 stages"),
    (m.encode_json(plan("ann", n_stages=5)), "has 2 stages here, the plan says 5"),
    (json.dumps({**plan("ann"), "targets": {"cadence_spm": 999, "tolerance_spm": None}}).encode(), "<= 240"),
    (json.dumps({**plan("ann", program=None), "stage": None, "limits": {"impact_limit_g": 0.5}}).encode(), ">= 1"),
])
def test_invalid_plans_change_nothing_and_are_counted(payload, reason):
    p = _pipe()
    cfg_before = p.cues.config
    reply = p.handle_plan(payload)
    assert reply["ok"] is False and reply["command"] == "plan" and reason in reply["reason"], reply
    assert p.counters["plans_rejected"] == 1 and p.counters["control_rejected"] == 1
    assert p.program is None and p.plan is None and p.cues.config == cfg_before
    # and the pipeline still takes a good plan afterwards
    assert p.handle_plan(m.encode_json(plan("ann", stage=2, cadence=168, impact=5.0)))["ok"] is True
    assert p.program.stage_index == 1 and p.cues.config.target_cadence_spm == 168.0
    assert p.cues.config.impact_limit_g == 5.0 and p.counters["plans_applied"] == 1


def test_command_line_program_wins_over_the_plan():
    prog = load_program("demo-short")
    p = _pipe(program=prog, program_stage=0)
    reply = p.handle_plan(m.encode_json(plan("ann", stage=2, cadence=160)))
    assert reply["ok"] is True and "pinned by the command line" in reply["reason"]
    assert p.program.stage_index == 0 and p._program_state()["source"] == "cli"
    assert p.cues.config.target_cadence_spm == 160.0  # targets/limits of the plan still apply


def test_plan_without_program_stops_a_planned_program_and_pain_makes_records():
    p = _pipe()
    assert p.handle_plan(m.encode_json(plan("ann", stage=1)))["ok"]
    assert p.publish_program_session(final=False) is None  # nothing started, no pain: no record
    p._apply("report_pain", {"pain_0_10": 2, "when": "before"})
    rec = p.program_records[-1]
    assert rec["pain_before"] == 2 and rec["pain_after"] is None and rec["stage"] == 1 and not rec["final"]
    # the therapist moves the stage before anything ran: same record, the pain before carries over
    assert p.handle_plan(m.encode_json(plan("ann", stage=2)))["ok"]
    assert p.program.stage_index == 1 and p.program.pain_before_ == 2 and p._program_seq == 0
    assert p.handle_plan(m.encode_json({**plan("ann", program=None), "stage": None}))["ok"]
    assert p.program is None and p.program_records[-1]["final"] and p.program_records[-1]["stage"] == 2
    assert p.program_records[-1]["pain_before"] == 2
