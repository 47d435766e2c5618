"""Demo 3, ``python -m demo_apps.asyncjobs``: span trees across asyncio tasks, read by real BPF.

The plan (demo_apps/asyncjobs/plan.py) says what every job does, so the test
predicts each tree from it: which spans exist, their parents and statuses.
"""

import asyncio
import signal
import subprocess
import sys
from collections import defaultdict

import pytest

from demo_apps.asyncjobs import jobs, probes
from demo_apps.asyncjobs.__main__ import parse_args
from demo_apps.asyncjobs.plan import MAX_ATTEMPTS, ROLES, make_plan
from tests.support import Lines, child_env, declared, run_traced

JOBS, SEED = 12, 5
BATCH = f'''
import asyncio
from demo_apps.asyncjobs import jobs, probes
from demo_apps.asyncjobs.plan import make_plan
probes.provider.load()
ready()
wait_go()
summary = asyncio.run(jobs.run_batch(make_plan({JOBS}, {SEED}), {SEED}))
print("DONE " + summary.line({SEED}), flush=True)
wait_stdin()
'''
ERRORS = {"failed": 1, "cancelled": 2}
COMMAND = [sys.executable, "-m", "demo_apps.asyncjobs"]


class Tree:
    """Spans (start record + "end") by id and by probe base name, and events, from capture records."""

    def __init__(self, records):
        self.spans, self.events = {}, defaultdict(list)
        for r in records:
            name, _, role = r["probe"].partition("__")
            if role == "start":
                self.spans[r["span_id"]] = dict(r, name=name)
            elif role == "end":
                self.spans[r["span_id"]]["end"] = r
            else:
                self.events[r["probe"]].append(r)

    def named(self, name, parent=None):
        return [s for s in self.spans.values()
                if s["name"] == name and (parent is None or s["parent_span_id"] == parent["span_id"])]


def check_status(span, outcome, error_type=None):
    end = span["end"]
    assert end["status"] == ERRORS.get(outcome, 0), (span["name"], end)
    if outcome == "cancelled":
        assert end["error_type"] == "asyncio.CancelledError"
    elif outcome == "failed":
        assert end["error_type"] == f"demo_apps.asyncjobs.jobs.{error_type}" and end["error_message"]


@pytest.mark.bpf
def test_trees_across_tasks_with_errors_and_a_cancellation():
    plan = make_plan(JOBS, SEED)
    records = run_traced(BATCH, *declared(probes.provider), last="batch__end")  # the batch ends last
    tree = Tree(records)
    assert all("end" in s for s in tree.spans.values()), "every span that started ended"
    # A job that failed or was cancelled never returned its stored bytes: its end probe marks
    # job.stored_bytes as not given (bit 8), never a 0 (docs/abi.md). Nothing else is flagged.
    flagged = [r for r in records if r["flags"] >> 8]
    assert all(r["probe"] == "job__end" and r["status"] != 0 and r["flags"] == 1 << 8 for r in flagged), flagged
    assert len(flagged) == sum(1 for job in plan if job.outcome != "ok"), flagged
    (batch,) = tree.named("batch")
    assert (batch["parent_span_id"], batch["batch.size"], batch["batch.seed"]) == (0, JOBS, SEED)
    assert {(s["trace_id_high"], s["trace_id_low"]) for s in tree.spans.values()} == {
        (batch["trace_id_high"], batch["trace_id_low"])}, "one batch, one trace"
    job_spans = {s["job.id"]: s for s in tree.named("job", batch)}
    assert sorted(job_spans) == [job.id for job in plan], "each job's task hangs from the batch"
    checked = 1
    for job in plan:
        span = job_spans[job.id]
        assert span["job.records"] == job.records
        checked += check_job(tree, job, span)
    assert checked == len(tree.spans), "no span outside the trees the plan predicts"
    (hung,) = [job for job in plan if job.hangs]
    (cancel,) = tree.events["job_cancel"]
    assert (cancel["span_id"], cancel["job.id"]) == (batch["span_id"], hung.id)


def check_job(tree, job, span):
    """Check the subtree of one job (fetches, retry events, transform, its chunk tasks, store); its size."""
    error_type = "RecordError" if job.bad_record >= 0 else "FetchError"
    check_status(span, job.outcome, error_type)
    fetches = sorted(tree.named("fetch", span), key=lambda s: s["fetch.attempt"])
    attempts = 1 if job.hangs else min(job.fetch_failures + 1, MAX_ATTEMPTS)
    assert [f["fetch.attempt"] for f in fetches] == list(range(1, attempts + 1))
    assert all(f["url.full"] == job.source for f in fetches)
    for fetch in fetches:
        outcome = "cancelled" if job.hangs else "failed" if fetch["fetch.attempt"] <= job.fetch_failures else "ok"
        check_status(fetch, outcome, "FetchError")
    retries = [e for e in tree.events["fetch_retry"] if e["span_id"] == span["span_id"]]
    assert [e["fetch.attempt"] for e in retries] == list(range(1, min(job.fetch_failures, MAX_ATTEMPTS - 1) + 1))
    transforms, stores = tree.named("transform", span), tree.named("store", span)
    if job.hangs or job.fetch_failures >= MAX_ATTEMPTS:
        assert transforms == stores == []
        return 1 + len(fetches)
    (transform,) = transforms
    assert transform["transform.records"] == job.records
    check_status(transform, job.outcome, error_type)
    chunks = sorted(tree.named("transform_chunk", transform), key=lambda s: s["chunk.first"])
    assert [(c["chunk.first"], c["chunk.records"]) for c in chunks] == [(r.start, len(r)) for r in job.chunks()]
    for chunk in chunks:
        bad = chunk["chunk.first"] <= job.bad_record < chunk["chunk.first"] + chunk["chunk.records"]
        check_status(chunk, "failed" if bad else "ok", "RecordError")
    if job.bad_record >= 0:
        assert stores == []
        return 2 + len(fetches) + len(chunks)
    (store,) = stores
    assert store["store.key"] == f"results/{job.id}"
    assert store["end"]["store.bytes"] == span["end"]["job.stored_bytes"] > 0
    return 3 + len(fetches) + len(chunks)


def test_a_seed_always_gives_the_same_plan_with_every_path():
    assert make_plan(8, 3) == make_plan(8, 3) != make_plan(8, 4)
    for seed in range(20):
        plan = make_plan(6, seed)
        assert sum(job.hangs for job in plan) == 1
        assert {"ok", "failed", "cancelled"} <= {job.outcome for job in plan} | {"ok"}
        assert any(job.fetch_failures == 1 for job in plan) and any(job.bad_record >= 0 for job in plan)
        assert any(job.fetch_failures == MAX_ATTEMPTS for job in plan)
    assert len(make_plan(2, 1)) == 2 and len(ROLES) == 4


def test_batch_outcomes_are_the_plans():
    plan = make_plan(JOBS, SEED)
    summary = asyncio.run(jobs.run_batch(plan, SEED))
    assert summary.outcomes == {job.id: job.outcome for job in plan}
    assert summary.line(SEED).startswith(f"asyncjobs: {JOBS} jobs (seed {SEED}): ")


def test_command_prints_the_same_summary_for_the_same_seed():
    runs = [subprocess.run(COMMAND + ["--jobs", "6", "--seed", "3"], capture_output=True, text=True,
                           timeout=60, env=child_env()) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0]
    (line,) = runs[0].stdout.splitlines()
    assert runs[1].stdout.splitlines() == [line] and "Traceback" not in runs[0].stderr
    assert line.startswith("asyncjobs: 6 jobs (seed 3): ") and "1 cancelled" in line


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_loop_runs_batches_until_a_signal(signum):
    proc = Lines(COMMAND + ["--jobs", "4", "--seed", "7", "--loop"])
    try:
        assert proc.expect("asyncjobs: ").startswith("asyncjobs: 4 jobs (seed 7)")
        assert proc.expect("asyncjobs: ").startswith("asyncjobs: 4 jobs (seed 8)")
        proc.proc.send_signal(signum)
        assert proc.proc.wait(10) == 0
    finally:
        proc.stop()
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [["--jobs", "0"], ["--seed", "x"], ["--forever"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2 and "usage: python -m demo_apps.asyncjobs" in capsys.readouterr().err
