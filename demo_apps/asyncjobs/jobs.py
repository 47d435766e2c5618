"""Run a batch of planned jobs concurrently, each step a span.

The tree of one batch (one trace):

    batch
    ├── job               one task per job
    │   ├── fetch         per attempt; a failed one is followed by a fetch.retry event
    │   ├── transform
    │   │   └── transform.chunk   one task per chunk, created inside transform
    │   └── store
    └── (job.cancel event for the job the batch gives up on)

Tasks copy their creator's context, so each job span's parent is the batch
span and each chunk's is its transform span, though they all run
interleaved on one event loop thread.
"""

import asyncio
import json
from collections import Counter

from . import probes
from .plan import MAX_ATTEMPTS


class FetchError(Exception):
    """The upstream answered with an error."""


class RecordError(ValueError):
    """A record the transform cannot use."""


def _seconds(ms):
    return ms / 1000


@probes.fetch
async def fetch(source: str, attempt: int, job):
    if job.hangs:
        await asyncio.Event().wait()  # an upstream that never answers
    await asyncio.sleep(_seconds(job.delay_ms))
    if attempt <= job.fetch_failures:
        raise FetchError(f"{source}: upstream returned 503 (attempt {attempt})")
    return [(job.id * 31 + i * 7) % 251 for i in range(job.records)]


@probes.chunk
async def transform_chunk(first: int, count: int, records, job):
    await asyncio.sleep(_seconds(job.delay_ms / 2))
    for i in range(first, first + count):
        if i == job.bad_record:
            raise RecordError(f"job {job.id}: record {i} is malformed")
    return [r * r for r in records[first:first + count]]


@probes.transform
async def transform(records, job):
    """Fan out one task per chunk; fail as the first failed chunk did, once all are done."""
    results = await asyncio.gather(*(transform_chunk(c.start, len(c), records, job) for c in job.chunks()),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [value for chunk in results for value in chunk]


@probes.store
async def store(key: str, values, job):
    await asyncio.sleep(_seconds(job.delay_ms))
    return len(json.dumps({"key": key, "values": values}).encode())


@probes.job
async def run_job(job):
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            records = await fetch(job.source, attempt, job)
            break
        except FetchError:
            if attempt == MAX_ATTEMPTS:
                raise
            probes.retry.fire(attempt, "FetchError")
    values = await transform(records, job)
    return await store(f"results/{job.id}", values, job)


@probes.batch
async def run_batch(plan, seed: int):
    """Run every job concurrently; cancel the ones still waiting once the others are done."""
    tasks = [asyncio.ensure_future(run_job(job)) for job in plan]
    finishing = [t for t, job in zip(tasks, plan) if not job.hangs]
    if finishing:
        await asyncio.wait(finishing)
    for task, job in zip(tasks, plan):
        if not task.done():
            probes.cancel.fire(job.id)
            task.cancel()
    await asyncio.wait(tasks)
    return Summary.of(plan, tasks)


class Summary:
    """How a batch went: outcomes by job, and bytes stored."""

    def __init__(self, outcomes, stored):
        self.outcomes, self.stored = outcomes, stored

    @classmethod
    def of(cls, plan, tasks):
        outcomes = {}
        for job, task in zip(plan, tasks):
            outcomes[job.id] = ("cancelled" if task.cancelled() else "failed" if task.exception() else "ok")
        return cls(outcomes, sum(t.result() for t in tasks if not t.cancelled() and not t.exception()))

    def line(self, seed):
        counts = Counter(self.outcomes.values())
        return (f"asyncjobs: {len(self.outcomes)} jobs (seed {seed}): {counts['ok']} ok, "
                f"{counts['failed']} failed, {counts['cancelled']} cancelled; {self.stored} bytes stored")
