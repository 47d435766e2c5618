"""Real USDT tools against real providers: bcc by pid, tplist, readelf, bpftrace.

These tools know nothing of spanprobe; what they read is what any tracer reads.
"""

import math
import shutil
import struct
import subprocess

import pytest

from tests.support import Lines, capture, go, hits, python_child, ready_info, semaphores

pytestmark = pytest.mark.bpf

INT_TYPES = ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"]
TWELVE = ["u8", "i16", "i32", "i64", "str", "f64", "i8", "u16", "u32", "u64", "str", "bool"]

TRACEE = '''
import spanprobe
p = spanprobe.Provider("sptest")
ints = p.add_probe("ints", *[(t + "v", t) for t in %(ints)r])
misc = p.add_probe("misc", flag=bool, real=float, text=str, blob=bytes)
twelve = p.add_probe("twelve", *[("a%%d" %% i, t) for i, t in enumerate(%(twelve)r)])
p.load()
ready(fd=p.backing.fd)
wait_go()
print("ENABLED", bool(ints.enabled), bool(misc.enabled), bool(twelve.enabled), flush=True)
ints.fire(-128, -32768, -2**31, -2**63, 0, 0, 0, 0)
ints.fire(127, 32767, 2**31 - 1, 2**63 - 1, 255, 65535, 2**32 - 1, 2**64 - 1)
ints.fire(-1, -1, -1, -1, 1, 1, 1, 1)
for real, text in [(-0.0, ""), (1e308, "héllo wörld ✓"), (float("nan"), "x" * 300), (float("-inf"), "a")]:
    misc.fire(True, real, text, b"\\x00\\xffbin")
misc.fire(False, 5e-324, "z", lambda: b"lazy")
def fire_twelve():
    twelve.fire(200, -300, -70000, -(2**40), "seventh?", 2.5, -7, 60000, 4000000000, 2**64 - 2, "last str", True)
fire_twelve()
print("FIRED", flush=True)
# Some tools (bpftrace) say they attach before their uprobes are live: keep
# firing until the test is done.
import select
while not select.select([sys.stdin], [], [], 0.05)[0]:
    fire_twelve()
'''


def bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


@pytest.fixture
def probed():
    proc = python_child(TRACEE % {"ints": INT_TYPES, "twelve": TWELVE})
    info = ready_info(proc)
    yield proc, info
    proc.stop()


def test_bcc_reads_every_type_exactly(probed):
    proc, info = probed
    cap = capture(info["pid"], {"ints": INT_TYPES, "misc": ["bool", "f64", "str", "bytes"], "twelve": TWELVE})
    go(proc)
    assert proc.expect("ENABLED") == "ENABLED True True True"
    try:
        got = hits(cap, 9)
    finally:
        cap.stop()
    ints = [h["args"] for h in got if h["probe"] == "ints"]
    assert ints == [
        [-128, -32768, -2**31, -2**63, 0, 0, 0, 0],
        [127, 32767, 2**31 - 1, 2**63 - 1, 255, 65535, 2**32 - 1, 2**64 - 1],
        [-1, -1, -1, -1, 1, 1, 1, 1],
    ]
    misc = [h["args"] for h in got if h["probe"] == "misc"]
    assert [m[0] for m in misc] == [1, 1, 1, 1, 0]
    reals = [m[1]["f64_bits"] for m in misc]
    assert reals[0] == bits(-0.0) and reals[1] == bits(1e308) and reals[3] == bits(float("-inf"))
    assert math.isnan(struct.unpack("<d", struct.pack("<Q", reals[2]))[0])
    assert reals[4] == bits(5e-324)
    texts = [m[2] for m in misc]
    assert texts[:2] == ["", "héllo wörld ✓"]
    assert texts[2] == "x" * 256  # all the capture reads: its 256-byte buffer
    assert [m[3]["hex"] for m in misc] == [b"\x00\xffbin".hex()] * 4 + [b"lazy".hex()]
    (twelve,) = [h["args"] for h in got if h["probe"] == "twelve"]
    assert twelve[:5] == [200, -300, -70000, -(2**40), "seventh?"]
    assert twelve[5]["f64_bits"] == bits(2.5)
    assert twelve[6:] == [-7, 60000, 4000000000, 2**64 - 2, "last str", 1]


def test_semaphore_counts_attached_tracers(probed):
    proc, info = probed
    assert semaphores(info["pid"], "sptest")["twelve"] == 0
    cap = capture(info["pid"], {"twelve": TWELVE, "ints": INT_TYPES, "misc": ["bool"]})
    go(proc)
    proc.expect("FIRED")  # the tracee saw its probes enabled
    sem_on = semaphores(info["pid"], "sptest")["twelve"]
    cap.stop()
    sem_off = semaphores(info["pid"], "sptest")["twelve"]
    assert sem_on >= 1
    assert sem_off == 0


def test_tplist_and_readelf_list_every_probe(probed):
    proc, info = probed
    out = subprocess.run(["tplist-bpfcc", "-p", str(info["pid"])], capture_output=True, text=True, timeout=60).stdout
    for probe in ("ints", "misc", "twelve"):
        assert f"sptest:{probe}" in out
    verbose = subprocess.run(["tplist-bpfcc", "-vv", "-p", str(info["pid"]), "sptest:twelve"],
                             capture_output=True, text=True, timeout=60).stdout
    assert "argument #1 1 unsigned bytes @ di" in verbose
    assert "argument #7 1 signed   bytes @ *(sp + 8)" in verbose
    assert "argument #12 1 unsigned bytes @ *(sp + 48)" in verbose
    path = f"/proc/{info['pid']}/fd/{info['fd']}"
    notes = subprocess.run(["readelf", "-n", path], capture_output=True, text=True, check=True).stdout
    assert "Arguments: -1@%dil -2@%si -4@%edx -8@%rcx 1@%r8b 2@%r9w 4@8(%rsp) 8@16(%rsp)" in notes
    assert ("Arguments: 1@%dil -2@%si -4@%edx -8@%rcx 8@%r8 8@%r9 -1@8(%rsp) 2@16(%rsp) "
            "4@24(%rsp) 8@32(%rsp) 8@40(%rsp) 1@48(%rsp)") in notes
    assert "Arguments: 1@%dil 8@%rsi 8@%rdx 8@%rcx" in notes


@pytest.mark.skipif(not shutil.which("bpftrace"), reason="bpftrace not installed")
def test_bpftrace_reads_the_same_values(probed):
    # bpftrace 0.17 reads USDT arguments 0-5 only (the register ones); bcc
    # covers the stack arguments above.
    proc, info = probed
    path = f"/proc/{info['pid']}/fd/{info['fd']}"
    script = ('usdt:PATH:sptest:twelve { printf("T %d %d %d %ld %s\\n", '
              'arg0, arg1, arg2, arg3, str(arg4)); exit(); }').replace("PATH", path)
    bt = subprocess.Popen(["bpftrace", "-p", str(info["pid"]), "-e", script],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert bt.stdout.readline().startswith("Attaching"), bt.stderr.read()
        go(proc)
        out, err = bt.communicate(timeout=120)
    finally:
        bt.kill()
    lines = [line for line in out.splitlines() if line[:2] in ("I ", "T ")]
    assert lines == [f"T 200 -300 -70000 {-(2**40)} seventh?"], out + err


SEVEN = '''
import select, spanprobe
p = spanprobe.Provider("sptools")
@p.span(attributes={"method": ("m", str), "status": ("s", "u16"), "size": ("z", "i64"),
                    "cached": ("c", bool), "route": ("r", str), "retries": ("t", "i8"), "shard": ("h", "u32")})
def work(method, status, size, cached, route, retries, shard):
    return None
p.load()
ready(fd=p.backing.fd)
while not select.select([sys.stdin], [], [], 0.02)[0]:
    work("GET", 404, -(2**40), True, "/items/<id>", -3, 4000000000)
'''
#: What each tool should print for SEVEN's seven attributes, in order.
SEVEN_VALUES = "GET 404 -1099511627776 1 /items/<id> -3 4000000000"


@pytest.fixture
def seven():
    proc = python_child(SEVEN)
    info = ready_info(proc)
    yield info
    proc.stop()


def first_lines(argv, tags, timeout=60.0):
    """Run a tracing tool until it has printed a line containing each of ``tags``
    (" A ", " B "): the text after each tag."""
    tool = Lines(argv)
    found = {}
    try:
        while len(found) < len(tags):
            line = " " + tool.next(timeout=timeout)
            for tag in tags:
                if tag in line and tag not in found:
                    found[tag] = line.split(tag, 1)[1]
    finally:
        tool.stop()
    return [found[tag] for tag in tags]


def test_debian_bpftrace_prints_every_attribute_of_a_seven_attribute_span(seven):
    """bpftrace 0.17 refuses arg6 on x86_64: the first attribute is the start probe's arg5,
    the other six are the __a6 view's arg0-arg5 (docs/sdk-spans.md "Stock tools")."""
    script = ('usdt:*:sptools:work__start { printf("A %s\\n", str(arg5)); } '
              'usdt:*:sptools:work__start__a6 { '
              'printf("B %d %ld %d %s %d %u\\n", arg0, arg1, arg2, str(arg3), arg4, arg5); }')
    first, rest = first_lines(["bpftrace", "-p", str(seven["pid"]), "-e", script], [" A ", " B "])
    assert f"{first} {rest}" == SEVEN_VALUES


def test_debian_trace_bpfcc_prints_every_attribute_of_a_seven_attribute_span(seven):
    """trace-bpfcc reads arg1-arg6: the start probe's arg6, then the view's arg1-arg6. It
    reads strings from user memory only when the probe names its library (u:LIB:probe)."""
    lib = f"/proc/{seven['pid']}/fd/{seven['fd']}"
    first, rest = first_lines(["trace-bpfcc", "-p", str(seven["pid"]),
                               f'u:{lib}:work__start "A %s", arg6',
                               f'u:{lib}:work__start__a6 "B %d %lld %d %s %d %u", arg1, arg2, arg3, arg4, arg5, arg6'],
                              [" A ", " B "])
    assert f"{first.strip()} {rest.strip()}" == SEVEN_VALUES


def test_forked_child_is_traced_by_its_own_pid():
    proc = python_child('''
import spanprobe
p = spanprobe.Provider("forky")
hello = p.add_probe("hello", who=str, n="i32")
p.load()
pid = os.fork()
if pid == 0:
    ready(role="child")
    wait_go()
    import select
    while not select.select([sys.stdin], [], [], 0.05)[0]:
        hello.fire("child", os.getpid())
    os._exit(0)
os.waitpid(pid, 0)
''')
    try:
        info = ready_info(proc)
        cap = capture(info["pid"], {"hello": ["str", "i32"]})
        go(proc)
        try:
            (hit,) = hits(cap, 1)
        finally:
            cap.stop()
        assert hit["args"] == ["child", info["pid"]]
    finally:
        proc.stop()
