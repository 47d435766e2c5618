"""Faults, with the real tracer and real BPF: processes killed, forked, exec'd, providers swapped,
the tracer itself killed.

Semaphores are read from outside the application (SDT notes + /proc/PID/mem,
support.semaphores), the way a tracer sees them, not through the SDK.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.support import semaphores
from tests.support.hardening_helpers import jsonl_tracer, spans_of, stats_of
from tests.support.load import memory_kib
from tests.support.tracer_helpers import SITES, wait_attached, wait_until

pytestmark = pytest.mark.bpf

ALL_OFF = {"req_start": 0, "req_end": 0, "db_start": 0, "db_end": 0, "note": 0, "tick": 0}
ALL_ON = {probe: 1 for probe in ALL_OFF}


def test_processes_killed_mid_spans(apps, tmp_path):
    """SIGKILL with thousands of spans open: the tracer carries on, counts them, memory stays flat."""
    victims, survivor = [apps() for _ in range(4)], apps()
    for app in victims + [survivor]:
        app.send("load shop")
    tracer = jsonl_tracer(tmp_path, *[a for app in victims + [survivor] for a in ("--pid", str(app.pid))])
    opened, rss = 2000, []
    try:
        wait_attached(tracer, SITES * 5)
        for round_, victim in enumerate(victims, 1):
            victim.send("spans shop 5")
            victim.send("open shop %d" % opened)
            victim.proc.kill()
            victim.proc.wait()
            survivor.send("spans shop 1")
            assert wait_until(lambda: len(spans_of(tmp_path, survivor.pid)) == 3 * round_), tracer.stderr
            time.sleep(0.6)  # a rescan: the dead process is forgotten and its open spans reaped
            rss.append(memory_kib(tracer.proc.pid)["VmRSS"])
        assert tracer.proc.poll() is None
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    print("tracer RSS after each kill (KiB):", rss)
    stats = stats_of(tmp_path)
    why = "accounting %s; tracer stderr:\n%s" % (stats, tracer.stderr)  # said by any failure below
    assert stats["unmatched_exited"] == opened * len(victims), why
    assert stats["open_at_exit"] == 0 and stats["lost"] == 0, why
    assert "%d starts never ended (%d process exited" % (opened * 4, opened * 4) in tracer.stderr, why
    assert len(spans_of(tmp_path)) == 15 * len(victims) + 3 * len(victims), why
    assert rss[-1] - rss[0] < 8 * 1024, rss


def test_tracer_sigkilled_leaves_program_running_and_semaphores_zero(apps, tmp_path):
    app = apps()
    app.send("load shop")
    assert semaphores(app.pid, "shop") == ALL_OFF
    tracer = jsonl_tracer(tmp_path, "--pid", str(app.pid))
    try:
        wait_attached(tracer, SITES)
        child = app.fork(tmp_path / "child.fifo")
        assert semaphores(app.pid, "shop") == semaphores(child.pid, "shop") == ALL_ON
        app.send("burn shop")
        assert wait_until(lambda: len(spans_of(tmp_path)) >= 100)
        tracer.proc.send_signal(signal.SIGKILL)
        tracer.proc.wait(10)
        burnt_at_kill = app.send("sems shop")  # the program answers while and after its tracer dies
        time.sleep(0.5)
        fired = app.send("stop")
    finally:
        tracer.kill()
    assert fired["errors"] == [] and fired["spans"] > len(spans_of(tmp_path))
    assert burnt_at_kill["sems"] == ALL_OFF  # the SDK's own view agrees
    # The kernel's reference counters undid the tracer's increments in the
    # process and in the child that inherited a copy of its semaphores.
    assert semaphores(app.pid, "shop") == ALL_OFF
    assert semaphores(child.pid, "shop") == ALL_OFF
    assert app.send("spans shop 2")["spans"] == 6


def test_forked_child_under_pid(apps, tmp_path):
    """--pid traces that process only. A child forked while it is traced inherits a copy of its
    semaphores; the kernel clears each one the first time the child hits that probe (one trap,
    no record) and clears them all when the tracer detaches. A child that execs and loads a
    provider is not traced."""
    app = apps()
    app.send("load shop")
    tracer = jsonl_tracer(tmp_path, "--pid", str(app.pid))
    try:
        wait_attached(tracer, SITES)
        child = app.fork(tmp_path / "child.fifo")
        kid = app.fork(tmp_path / "kid.fifo", exec_=True)
        assert semaphores(child.pid, "shop") == ALL_ON
        child.send("plain shop 3")
        assert semaphores(child.pid, "shop") == dict(ALL_ON, tick=0)
        child.send("spans shop 1")
        assert semaphores(child.pid, "shop") == ALL_OFF
        kid.send("load kid")
        assert kid.send("wait kid 1")["enabled"] is False
        app.send("spans shop 1")
        assert wait_until(lambda: len(spans_of(tmp_path)) >= 3)
        child.send("sems shop")
        assert tracer.stop() == 0, tracer.stderr
        assert semaphores(child.pid, "shop") == semaphores(app.pid, "shop") == ALL_OFF
    finally:
        tracer.kill()
    spans = spans_of(tmp_path)
    assert {s["resource"]["process.pid"] for s in spans} == {app.pid}
    assert len(spans) == 3
    stats = stats_of(tmp_path)
    assert stats["decode_errors"] == 0 and stats["lost"] == 0


def test_forked_and_execed_children_traced_with_all(apps, tmp_path):
    """--all: a child that execs and loads a provider, and a child that keeps its parent's
    provider (and loads another), are traced under their own pids."""
    app = apps()
    app.send("load shop")
    tracer = jsonl_tracer(tmp_path, "--all")
    try:
        wait_attached(tracer, SITES, pid=app.pid)
        kid = app.fork(tmp_path / "kid.fifo", exec_=True)
        kid.send("load kid")
        wait_attached(tracer, SITES, pid=kid.pid)
        assert kid.send("wait kid 30")["enabled"]
        kid.send("spans kid 1")
        child = app.fork(tmp_path / "child.fifo")
        child.send("load extra")
        wait_attached(tracer, 2 * SITES, pid=child.pid)  # the inherited provider and `extra`
        assert child.send("wait extra 30")["enabled"]
        child.send("spans shop 1")
        child.send("spans extra 1")
        assert wait_until(lambda: len(spans_of(tmp_path, kid.pid)) >= 3 and len(spans_of(tmp_path, child.pid)) >= 6)
        # Attaching to the child found the breakpoints it inherited: counted once, not twice.
        assert semaphores(child.pid, "shop") == ALL_ON
        assert tracer.stop() == 0, tracer.stderr
        assert semaphores(child.pid, "shop") == semaphores(child.pid, "extra") == ALL_OFF
    finally:
        tracer.kill()
    assert {s["scope"] for s in spans_of(tmp_path, kid.pid)} == {"kid"}
    child_spans = spans_of(tmp_path, child.pid)
    by_scope = {}
    for s in child_spans:
        by_scope.setdefault(s["scope"], []).append(s)
    assert sorted(by_scope) == ["extra", "shop"] and all(len(v) == 3 for v in by_scope.values())
    assert child_spans[0]["resource"]["process.parent_pid"] == app.pid


def test_provider_unloaded_and_replaced_while_attached(apps, tmp_path):
    """The same provider name unloaded and loaded again (a new object at a new address), twice."""
    app = apps()
    app.send("load shop")
    tracer = jsonl_tracer(tmp_path, "--pid", str(app.pid))
    try:
        for round_ in range(1, 4):
            wait_attached(tracer, SITES)
            app.send("spans shop 2")
            if round_ == 1:
                app.send("open shop 1")  # its end will never come: the provider goes away
            assert wait_until(lambda: len(spans_of(tmp_path)) == 6 * round_)
            if round_ < 3:
                app.send("unload shop")
                with pytest.raises(AssertionError, match="not mapped"):
                    semaphores(app.pid, "shop")  # gone for every tool
                wait_attached(tracer, 0)
                app.send("load shop")
        assert tracer.stop() == 0, tracer.stderr
    finally:
        tracer.kill()
    assert tracer.stderr.count("provider shop unloaded; detaching") == 2
    assert tracer.stderr.count("attached to provider shop") == 3
    stats = stats_of(tmp_path)
    assert stats["exported"] == 18 and stats["lost"] == 0 and stats["decode_errors"] == 0
    assert stats["open_at_exit"] == 1  # reported, not exported and not lost
