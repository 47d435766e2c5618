"""The span protocol, and where provider objects show up: each fact stated once.

docs/abi.md is the specification. The SDK fires probes by these rules and
the tracer decodes them by the same names. C cannot import them: bpf/core.c's
dlopen() path matcher spells PROC_SELF and PRIVATE_DIR_PREFIX out by hand, for
the tracer to render or check from here.
"""

from .types import Arg, ArgType

# --- probes and their fixed arguments ----------------------------------------------

ROLE_PLAIN, ROLE_SPAN_START, ROLE_SPAN_END, ROLE_EVENT = "plain", "span_start", "span_end", "event"
#: One probe per finished OpenTelemetry API span (spanprobe.otel): its one argument is the
#: span, an OTLP ``ScopeSpans`` message with that one span (spanprobe.abi.otlp writes it).
ROLE_OTEL_SPAN = "otel_span"
#: One probe per finished span (``<base>__span``), beside its start and end probes: one probe hit
#: a span where the pair costs two. Its one argument is the span's payload (SPAN_PAYLOAD).
ROLE_SPAN = "span"
PROBE_ROLES = (ROLE_PLAIN, ROLE_SPAN_START, ROLE_SPAN_END, ROLE_EVENT, ROLE_OTEL_SPAN, ROLE_SPAN)

#: The fixed leading arguments of span and event probes, (name, type) in order
#: ("Span protocol"). Attributes follow them.
FIXED_ARGS = {
    ROLE_SPAN_START: (("span_id", "u64"), ("parent_span_id", "u64"), ("trace_id_high", "u64"),
                      ("trace_id_low", "u64"), ("flags", "u32")),
    ROLE_SPAN_END: (("span_id", "u64"), ("status", "u8"), ("error_type", "str"),
                    ("error_message", "str"), ("flags", "u32")),
    ROLE_EVENT: (("span_id", "u64"), ("trace_id_high", "u64"), ("trace_id_low", "u64"), ("flags", "u32")),
    ROLE_OTEL_SPAN: (("span", "bytes"),),
    ROLE_SPAN: (("span", "bytes"),),
}
#: Roles whose probes carry their fixed arguments and nothing else.
FIXED_ONLY_ROLES = (ROLE_OTEL_SPAN, ROLE_SPAN)
#: The same, as the Args a probe is declared with.
START_ARGS, END_ARGS, EVENT_ARGS, OTEL_SPAN_ARGS, SPAN_ARGS = (
    tuple(Arg(n, ArgType(t)) for n, t in FIXED_ARGS[role])
    for role in (ROLE_SPAN_START, ROLE_SPAN_END, ROLE_EVENT, ROLE_OTEL_SPAN, ROLE_SPAN))

#: A span's probes are named <base> + these (the base is the span name made a C identifier).
START_SUFFIX, END_SUFFIX, SPAN_SUFFIX = "__start", "__end", "__span"

#: The application's environment variables a provider's schema carries (``environment``), as they
#: are when it loads: the tracer makes the resource of every span of the process from them.
RESOURCE_ENV = ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES")

# --- views: every argument within the stock tools' reach ----------------------------------

#: bpftrace 0.17 (Debian 12) reads USDT arguments arg0-arg5 only on x86_64, and
#: trace-bpfcc arg1-arg6: six. A probe with more arguments gets a view for each
#: further six: an extra SDT note at the same sites, with the same semaphore, named
#: ``<probe>__a<first>``, whose arguments are the probe's arguments first..first+5.
#: The tracer attaches only the probes its schema names; views are for other tools.
VIEW_WIDTH = 6
VIEW_INFIX = "__a"


def views(probe, nargs):
    """The views of ``probe`` with ``nargs`` arguments: (view name, first argument) pairs."""
    return [(f"{probe}{VIEW_INFIX}{first}", first) for first in range(VIEW_WIDTH, nargs, VIEW_WIDTH)]


def view_of(name):
    """(probe, first argument) if ``name`` is a view's, else None. Such names are reserved:
    no probe may be declared with one."""
    base, sep, first = name.rpartition(VIEW_INFIX)
    return (base, int(first)) if base and sep and first.isdigit() else None


# --- spans -----------------------------------------------------------------------------

SPAN_KINDS = ("internal", "server", "client", "producer", "consumer")
#: The kind of a schema span entry that names none.
DEFAULT_KIND = "internal"

#: span_end's ``status``: ok (OpenTelemetry's UNSET), the call raised, or it was cancelled.
STATUS_OK, STATUS_ERROR, STATUS_CANCELLED = 0, 1, 2
#: span_end's ``status`` the application set (spanprobe.set_status) on a span that did not raise:
#: ERROR, its description in ``error_message`` (``error_type`` empty); OK.
STATUS_SET_ERROR, STATUS_SET_OK = 3, 4
#: span_end's ``error_message`` is ``str(exception)`` cut to this many characters.
MAX_ERROR_MESSAGE = 256

# --- the one-hit span probe's payload ---------------------------------------------------

#: The ``span`` probe's bytes value is one little-endian struct, laid out per span from the types of
#: its start and end probes' arguments: a u32 reserved 0, then 8-byte words: the start time (ns,
#: CLOCK_BOOTTIME, which bpf_ktime_get_boot_ns reads), every argument the start probe would carry,
#: every argument the end probe would carry, in the order of their probes. Each word is the value
#: as the probe would pass it (signed types sign-extended, f64 its bits, bool 0/1); a bytes word is
#: the address of what the probe would point at (a u32 header and the data, 0 for NULL, valid for
#: the duration of the hit), and so is the end probe's error_type's and error_message's (NULL when the
#: span did not fail); a str attribute's word is 0: the string itself follows the words, inline.
PAYLOAD_TIME_WORD = 0
#: After the words, one slot of this many bytes per str attribute, in the order of the arguments:
#: the value's UTF-8 cut to its first PAYLOAD_STR bytes, zero-padded (NULL: all zero). 257 bytes
#: are what a tracer capturing 256 (the default) reads to see whether the value was cut.
PAYLOAD_STR = 257


def payload_fields(start_types, end_types):
    """The ``struct`` codes of a span payload's data (the header not included), one a field, for the start
    and end probes' argument types (ArgType, fixed arguments included): the reserved u32, the words, then
    the str attributes' slots."""
    types = (*start_types, *end_types)

    def code(t):
        return "d" if t is ArgType.F64 else "q" if t.signed else "Q"
    attrs = (*start_types[len(START_ARGS):], *end_types[len(END_ARGS):])
    return ["I", "Q", *(code(t) for t in types), *["%ds" % PAYLOAD_STR] * sum(t is ArgType.STR for t in attrs)]


def payload_format(start_types, end_types):
    """The ``struct`` format of a span payload's data (payload_fields, little-endian, unaligned)."""
    return "<" + "".join(payload_fields(start_types, end_types))


def payload_words(n_start):
    """(first start argument word, first end argument word) of a payload whose start probe has
    ``n_start`` arguments, as word indexes (word 0 is the start time)."""
    return 1, 1 + n_start


# --- flags -----------------------------------------------------------------------------

#: Bits 0-7 of ``flags``: the trace's W3C trace flags.
TRACE_FLAGS_MASK = 0xFF
#: W3C "sampled": the trace flags of a trace spanprobe starts.
TRACE_FLAG_SAMPLED = 0x01
#: Bit FLAG_CONVERSION_FAILED + i of ``flags``: attribute i (0-based, after the fixed
#: arguments) could not be converted, and the probe carries its type's zero value.
FLAG_CONVERSION_FAILED = 8

# --- bytes arguments -------------------------------------------------------------------

#: A bytes argument points at a little-endian u32 header, then at most this many bytes.
MAX_BYTES = 4096
#: Set in that header when the SDK cut a longer value; the other bits are the length.
BYTES_TRUNCATED = 1 << 31

# --- where a provider object is mapped ---------------------------------------------------

#: memfd_create() name of a provider's object: /proc/PID/maps shows MAPS_MEMFD_PREFIX + provider.
MEMFD_NAME_PREFIX = "spanprobe:"
MAPS_MEMFD_PREFIX = "/memfd:" + MEMFD_NAME_PREFIX
#: Where a memfd cannot be mapped: <dir>/PRIVATE_DIR_PREFIX<pid>-<random>/lib<provider>.so.
PRIVATE_DIR_PREFIX = "spanprobe-"
LIBRARY_PREFIX, LIBRARY_SUFFIX = "lib", ".so"
#: dlopen() opens a memfd as PROC_SELF + "/fd/N", or with "/." repeated after PROC_SELF when
#: that descriptor number was loaded before (the dynamic loader would hand back the old object).
PROC_SELF = "/proc/self"


def memfd_name(provider):
    """The memfd name of ``provider``'s object."""
    return MEMFD_NAME_PREFIX + provider


def library_name(provider):
    """The file name of ``provider``'s object in a private directory."""
    return f"{LIBRARY_PREFIX}{provider}{LIBRARY_SUFFIX}"


def fd_path(fd, spelling=0):
    """The path dlopen() is given for memfd ``fd``: its ``spelling``-th distinct name."""
    return PROC_SELF + "/." * spelling + f"/fd/{fd}"


def is_provider_mapping(path):
    """Does a /proc/PID/maps path look like an SDK provider object (a memfd or a private file)?"""
    if path.startswith(MAPS_MEMFD_PREFIX):
        return True
    parts = path.split("/")
    return len(parts) >= 2 and parts[-2].startswith(PRIVATE_DIR_PREFIX) and parts[-1].startswith(LIBRARY_PREFIX)
