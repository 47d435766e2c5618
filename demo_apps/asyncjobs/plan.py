"""What each job of a batch does, decided up front from a seed.

Outcomes depend only on the plan, never on timing, so a seed always gives the
same tree shapes, statuses and summary: a test can predict them, and a user
can compare two runs.
"""

import random
from dataclasses import dataclass

#: Fetch attempts per job; a job whose fetch fails this often fails.
MAX_ATTEMPTS = 2


@dataclass(frozen=True)
class Job:
    id: int
    records: int        # records fetched and transformed
    chunk_size: int     # records per transform task
    fetch_failures: int  # failed fetch attempts before one succeeds (MAX_ATTEMPTS: the job fails)
    bad_record: int     # index of a record the transform rejects, or -1
    hangs: bool         # its upstream never answers: the batch cancels it
    delay_ms: int       # base latency of each step

    @property
    def source(self):
        return f"mem://datasets/{self.id}"

    @property
    def outcome(self):
        """"ok", "failed" or "cancelled": what the job's span status will be."""
        if self.hangs:
            return "cancelled"
        if self.fetch_failures >= MAX_ATTEMPTS or self.bad_record >= 0:
            return "failed"
        return "ok"

    def chunks(self):
        """The record indexes of each transform task."""
        return [range(i, min(i + self.chunk_size, self.records)) for i in range(0, self.records, self.chunk_size)]


#: What can happen to a job; every batch gives each of these to one job (as far as
#: its size allows), so each path shows up whatever the seed.
ROLES = ("hangs", "fetch_fails", "bad_record", "retry")
#: Weights of what happens to the other jobs.
OTHERS = {"ok": 14, "retry": 3, "fetch_fails": 2, "bad_record": 1}


def make_plan(jobs, seed):
    """``jobs`` Jobs from ``seed``: one hangs, one fails to fetch, one has a bad record, one retries."""
    rng = random.Random(seed)
    special = dict(zip(rng.sample(range(jobs), min(jobs, len(ROLES))), ROLES))
    plan = []
    for i in range(jobs):
        role = special.get(i) or rng.choices(list(OTHERS), weights=list(OTHERS.values()))[0]
        records = rng.randint(3, 12)
        plan.append(Job(
            id=i, records=records, chunk_size=rng.randint(2, 4),
            fetch_failures={"retry": 1, "fetch_fails": MAX_ATTEMPTS}.get(role, 0),
            bad_record=rng.randrange(records) if role == "bad_record" else -1,
            hangs=role == "hangs", delay_ms=rng.randint(2, 15)))
    return plan
