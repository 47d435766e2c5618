"""An asyncio batch of concurrent jobs with spanprobe spans, to show trees across tasks.

    python -m demo_apps.asyncjobs [--jobs N] [--seed S] [--loop]

Each job runs in its own task and its transform step fans out into more
tasks; some jobs fail, one hangs and is cancelled. Every span still lands
under the right parent, with the right status. plan.py decides (from the
seed) what each job does, probes.py declares the probes, jobs.py runs them.
"""
