"""fire(): arity, types, ranges and strings are checked (a bad value skips the hit, never raises); laziness; threads; fork.

Where a test says a value is accepted, a Recorder (spanprobe.testing) stands
in for the probe site and the test checks what reached it.
"""

import logging
import os
import re
import threading
import time

import pytest

from spanprobe import ArgType, ProbeArgumentError, Provider
from spanprobe.probes.convert import converter
from spanprobe.abi.protocol import MAX_BYTES
from spanprobe.testing import Recorder, raise_semaphore


def declare(p):
    return {
        "ints": p.add_probe("ints", a="i8", b="u8", c="i16", d="u16", e="i32", f="u32", g="i64", h="u64"),
        "misc": p.add_probe("misc", flag=bool, real=float, text=str, blob=bytes),
    }


@pytest.fixture
def loaded():
    p = Provider("firetest")
    probes = declare(p)
    p.load()
    yield p, probes
    if p.loaded:
        p.unload()


@pytest.fixture
def recorded():
    """The same probes, not loaded, their sites recording what they receive (semaphores raised)."""
    p = Provider("firetest")
    probes = declare(p)
    return Recorder(p), probes


def values(hits):
    return [tuple(v for k, v in hit.items() if k != "probe") for hit in hits]


def test_wrong_argument_count_fails_like_a_python_call_even_when_disabled(loaded):
    _, probes = loaded
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'blob'"):
        probes["misc"].fire(True, 1.0, "x")
    with pytest.raises(TypeError, match="takes 4 positional arguments but 5 were given"):
        probes["misc"].fire(True, 1.0, "x", b"", 5)


@pytest.mark.parametrize("index,bad", [
    (0, -129), (0, 128), (1, -1), (1, 256), (2, -32769), (3, 65536),
    (4, -2**31 - 1), (5, 2**32), (6, 2**63), (7, -1), (7, 2**64)])
def test_integers_out_of_range_skip_the_hit_naming_the_argument(recorded, caplog, index, bad):
    rec, probes = recorded
    args = [0] * 8
    args[index] = bad
    name = "abcdefgh"[index]
    assert_skipped(rec, probes["ints"], args, caplog,
                   rf"firetest:ints argument '{name}': {bad} is out of range")


def test_extremes_of_every_width_are_accepted(recorded):
    rec, probes = recorded
    probes["ints"].fire(-128, 255, -32768, 65535, -2**31, 2**32 - 1, -2**63, 2**64 - 1)
    probes["ints"].fire(127, 0, 32767, 0, 2**31 - 1, 0, 2**63 - 1, 0)
    probes["ints"].fire(True, False, 1, 1, 1, 1, 1, 1)  # bools are ints
    assert values(rec.hits) == [(-128, 255, -32768, 65535, -2**31, 2**32 - 1, -2**63, 2**64 - 1),
                                (127, 0, 32767, 0, 2**31 - 1, 0, 2**63 - 1, 0),
                                (1, 0, 1, 1, 1, 1, 1, 1)]


@pytest.mark.parametrize("args,message", [
    (("yes", 1.0, "x", b""), "expected a bool"),
    ((True, "1.0", "x", b""), "expected a float"),
    ((True, 1.0, b"x", b""), "expected a str"),
    ((True, 1.0, 3, b""), "expected a str"),
    ((True, 1.0, "x", "str"), "expected bytes"),
    ((True, 1.0, "a\0b", b""), "NUL character at index 1"),
    ((True, 1.0, "bad \ud800 surrogate", b""), "lone surrogate"),
    ((True, 10 ** 400, "x", b""), "does not fit a 64-bit float"),
])
def test_values_that_cannot_be_carried_skip_the_hit(recorded, caplog, args, message):
    rec, probes = recorded
    assert_skipped(rec, probes["misc"], args, caplog, message)


def assert_skipped(rec, probe, args, caplog, message):
    """Traced, a bad value never raises: the hit is skipped, counted, and the first one logged."""
    with caplog.at_level(logging.WARNING, logger="spanprobe"):
        probe.fire(*args)
        probe.fire(*args)
    assert rec.hits == [], "nothing reaches the site: a plain probe has no flags to mark a bad value"
    assert probe.conversion_failures == 2
    (record,) = caplog.records  # logged once per probe, counted every time
    assert re.search(message, record.getMessage()) and "hit skipped" in record.getMessage()


def test_a_lazy_value_that_raises_skips_the_hit(recorded, caplog):
    rec, probes = recorded
    assert_skipped(rec, probes["misc"], (True, 1.0, lambda: 1 / 0, b""), caplog,
                   r"probe firetest:misc: a lazy value raised ZeroDivisionError")
    probes["misc"].fire_lazy(lambda: 1 / 0)
    assert probes["misc"].conversion_failures == 3 and rec.hits == []


def test_the_careful_converters_still_refuse_naming_the_argument():
    # What the skip's log line quotes: convert.converter's ProbeArgumentError.
    with pytest.raises(ProbeArgumentError, match=r"^where: expected a str, got int 123$"):
        converter(ArgType.STR, "where")(123)


def test_bad_types_are_not_checked_when_nobody_listens(recorded):
    # Checking costs what the semaphore test saves; see docs/sdk.md.
    rec, probes = recorded
    rec.set_enabled(False)
    probes["misc"].fire("yes", "no", 3, None)
    assert rec.hits == []


def test_lazy_arguments_are_evaluated_only_when_enabled(recorded):
    rec, probes = recorded
    calls = []

    def expensive():
        calls.append(1)
        return "computed"

    rec.set_enabled(False)
    probes["misc"].fire(True, 1.0, expensive, b"")
    probes["misc"].fire_lazy(lambda: calls.append(2) or (True, 1.0, "x", b""))
    assert calls == []
    assert rec.hits == []
    rec.set_enabled(True)
    probes["misc"].fire(True, 1.0, expensive, lambda: b"lazy bytes")
    probes["misc"].fire_lazy(lambda: calls.append(2) or (True, 1.0, "x", b""))
    assert calls == [1, 2]
    assert values(rec.hits) == [(1, 1.0, "computed", b"lazy bytes"), (1, 1.0, "x", b"")]


def test_huge_strings_and_bytes_are_accepted(recorded):
    rec, probes = recorded
    probes["misc"].fire(True, 1.0, "x" * 10_000_000, b"y" * 10_000_000)
    (hit,) = rec.hits
    assert hit["text"] == "x" * 10_000_000, "a str is passed whole"
    assert hit["blob"] == b"y" * MAX_BYTES, "bytes are cut at MAX_BYTES"


def test_fire_after_unload_is_a_noop_also_through_cached_references(loaded):
    p, probes = loaded
    rec = Recorder(p)  # the loaded probes now fire into the recorder
    fire = probes["misc"].fire
    fire(True, 1.0, "before", b"")
    p.unload()
    fire(True, 1.0, "x", b"")
    probes["misc"].fire(True, 1.0, "x", b"")
    assert not probes["misc"].enabled
    assert values(rec.hits) == [(1, 1.0, "before", b"")], "nothing reaches a site after unload()"


def test_many_threads_firing_while_enabled(recorded):
    rec, probes = recorded
    errors = []

    def work(n):
        try:
            for i in range(2000):
                probes["misc"].fire(i % 2 == 0, float(i), f"thread {n} {i}", b"\x00\x01")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = {(int(i % 2 == 0), float(i), f"thread {n} {i}", b"\x00\x01") for n in range(16) for i in range(2000)}
    assert len(rec.hits) == 16 * 2000 and set(values(rec.hits)) == expected


def test_unload_while_other_threads_fire_never_crashes():
    p = Provider("racing")
    x = p.add_probe("x", s=str)
    stop = threading.Event()
    errors, fired = [], [0] * 4

    def work(n):
        try:
            while not stop.is_set():
                x.fire("racing")
                fired[n] += 1
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(50):
            p.load()
            raise_semaphore(x)
            time.sleep(0.002)  # the threads fire into the live probe site, then it goes under them
            p.unload()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert all(fired), "every thread was firing while the provider came and went"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_probes_work_in_a_forked_child(loaded):
    _, probes = loaded
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its own copy of the semaphore page, same probes
        code = 0
        try:
            raise_semaphore(probes["misc"])
            probes["misc"].fire(True, 2.0, "from the child", b"")
            assert probes["misc"].enabled
        except BaseException:
            code = 1
        os.write(w, b"done")
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 4) == b"done"
    assert os.WEXITSTATUS(status) == 0
    assert not probes["misc"].enabled  # the child's semaphore was its own
