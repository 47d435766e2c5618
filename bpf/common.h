/* spanprobe: declarations shared by every BPF module the tracer loads.
 *
 * One "core" module (core.c) owns the ring buffer and the counters; each
 * provider module (rendered from spans.c) refers to them as extern tables, so
 * every record from every provider arrives in one ring buffer that userspace
 * drains on a timer, and every drop is counted in one place.
 *
 * Handlers are rendered per argument *shape* (types and locations), not per
 * span: spans of the same shape share code and open-span map, and the tracer
 * tells them apart by the BPF cookie it gives each attachment, which every
 * record carries.
 *
 * Record layout (little endian, all records start with struct sp_hdr):
 *   kind SP_KIND_SPAN   one finished span: start and end arguments, both times
 *   kind SP_KIND_POINT  one event or plain probe hit
 *   kind SP_KIND_LOAD   a traced process dlopen()ed something that may be a
 *                       provider and was stopped (-- COMMAND mode only)
 * The tracer's kernel/layout.py computes the same offsets; _Static_asserts in the
 * rendered module fail the build if the two ever disagree.
 */

/* SP_KIND_* (the record kinds above) and SP_CNT_* (the counter slots of the
 * per-CPU array sp_counters, SP_NCOUNTERS of them) are #defined before this
 * file by kernel/render.py, from kernel/layout.py's KIND_* and
 * kernel/counters.py's Counter: one statement of each, in Python. */

struct sp_hdr {
    u16 kind;
    u16 shape;     /* shape index in its module (a check: the cookie says it all) */
    u32 program;   /* module id, assigned by the tracer */
    u32 pid;       /* tgid */
    u32 tid;
    u64 cookie;    /* the attachment's BPF cookie: which probe of which provider, in which process */
};

/* bcc 0.26's helpers.h predates this helper (Linux 5.15). */
static u64 (*sp_attach_cookie)(void *ctx) = (void *)BPF_FUNC_get_attach_cookie;

/* bcc gives "extern" and "export" tables the generic table struct, which
 * lacks the ring buffer methods: spell out the struct BPF_RINGBUF_OUTPUT makes. */
struct sp_events_table_t {
    int key;
    u32 leaf;
    int (*ringbuf_output)(void *, u64, u64);
    void *(*ringbuf_reserve)(u64);
    void (*ringbuf_discard)(void *, u64);
    void (*ringbuf_submit)(void *, u64);
    u32 max_entries;
};

#ifdef SP_CORE
/* BPF_RINGBUF_OUTPUT plus BPF_TABLE_PUBLIC's export line. */
__attribute__((section("maps/ringbuf"))) struct sp_events_table_t sp_events = {
    .max_entries = SP_RINGBUF_BYTES
};
__attribute__((section("maps/export"))) struct sp_events_table_t __sp_events;
BPF_TABLE_PUBLIC("percpu_array", int, u64, sp_counters, SP_NCOUNTERS);
#else
__attribute__((section("maps/extern"))) struct sp_events_table_t sp_events = {
    .max_entries = SP_RINGBUF_BYTES
};
BPF_TABLE("extern", int, u64, sp_counters, SP_NCOUNTERS);
#endif

static __always_inline void sp_count(int slot)
{
    u64 *c = sp_counters.lookup(&slot);
    if (c)
        __sync_fetch_and_add(c, 1);
}
