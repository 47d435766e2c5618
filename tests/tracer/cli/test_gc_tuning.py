"""The tracer's garbage-collector settings (cli.trace.tune_gc): start-up objects frozen, young collections rarer."""

import gc

from spanprobe_tracer.cli.trace import GC_YOUNG_THRESHOLD, tune_gc


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold():
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD,) + before[1:]
        assert GC_YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0
        # cycles made afterwards are still collected
        cycle = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
