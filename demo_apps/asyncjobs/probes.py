"""The ``asyncjobs`` provider: one span per step of a job, and two events.

The decorators are made here, next to the events, so that the whole
provider reads in one place; they declare their probes when jobs.py applies
them, so import jobs.py before ``provider.load()``.
"""

import spanprobe

provider = spanprobe.Provider("asyncjobs")

batch = provider.span("batch", attributes={"seed": ("batch.seed", "i64")},
                      computed={"batch.size": ("u32", lambda plan, seed: len(plan))})
#: One job, consumed from the batch; its return value is the number of bytes it stored.
job = provider.span("job", kind="consumer", computed={"job.id": ("u32", lambda job: job.id),
                                                     "job.records": ("u32", lambda job: job.records)},
                    record_return=("job.stored_bytes", "u64"))
fetch = provider.span("fetch", kind="client", attributes={"source": ("url.full", str),
                                                          "attempt": ("fetch.attempt", "u32")})
transform = provider.span("transform", computed={"transform.records": ("u32", lambda records, job: len(records))})
chunk = provider.span("transform.chunk", attributes={"first": ("chunk.first", "u32"),
                                                     "count": ("chunk.records", "u32")})
store = provider.span("store", kind="client", attributes={"key": ("store.key", str)},
                      record_return=("store.bytes", "u64"))

retry = provider.event("fetch.retry", {"fetch.attempt": "u32", "error.type": str})
cancel = provider.event("job.cancel", {"job.id": "u32"})
