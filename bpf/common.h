/* spanprobe: declarations shared by every BPF module the tracer loads.
 *
 * One "core" module (core.c) owns the ring buffers and the counters; each
 * provider module (rendered from spans.c) refers to them as extern tables, so
 * every record from every provider arrives in one ring buffer (or, when a
 * reserve there fails, its rescue ring) that userspace drains on a timer, and
 * every drop is counted in one place.
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

/* sp_rescue: the rescue ring buffer, a quarter of sp_events' size, tried when
 * a reserve in sp_events fails (sp_reserve). */
#ifdef SP_CORE
/* BPF_RINGBUF_OUTPUT plus BPF_TABLE_PUBLIC's export line. */
__attribute__((section("maps/ringbuf"))) struct sp_events_table_t sp_events = {
    .max_entries = SP_RINGBUF_BYTES
};
__attribute__((section("maps/export"))) struct sp_events_table_t __sp_events;
__attribute__((section("maps/ringbuf"))) struct sp_events_table_t sp_rescue = {
    .max_entries = SP_RESCUE_BYTES
};
__attribute__((section("maps/export"))) struct sp_events_table_t __sp_rescue;
BPF_TABLE_PUBLIC("percpu_array", int, u64, sp_counters, SP_NCOUNTERS);
#else
__attribute__((section("maps/extern"))) struct sp_events_table_t sp_events = {
    .max_entries = SP_RINGBUF_BYTES
};
__attribute__((section("maps/extern"))) struct sp_events_table_t sp_rescue = {
    .max_entries = SP_RESCUE_BYTES
};
BPF_TABLE("extern", int, u64, sp_counters, SP_NCOUNTERS);
#endif

static __always_inline void sp_count(int slot)
{
    u64 *c = sp_counters.lookup(&slot);
    if (c)
        __sync_fetch_and_add(c, 1);
}

/* bcc 0.26 has no table method for bpf_ringbuf_query() (Linux 5.8), and a
 * ring-buffer map's address cannot be taken in its C: its rewrite of
 * ringbuf_output() is the one that passes the map itself, so sp_reserve()
 * borrows that rewrite to ask how much is unread (no module outputs a record
 * by copy). */
static u64 (*sp_ringbuf_query)(void *ring, u64 flags) = (void *)BPF_FUNC_ringbuf_query;
#define bpf_ringbuf_output(ring, data, size, flags) sp_ringbuf_query((void *)(ring), (flags))

/* A record of ``size`` bytes in the ring buffer or else in the rescue ring,
 * or NULL counted in slot ``full`` (no room for it in the ring buffer) or
 * ``failed`` (there was room). Since Linux 6.15 a reserve can fail with room
 * to spare: the ring's lock (an rqspinlock) gives up on a timeout or a
 * suspected deadlock, under contention from the other CPUs; the rescue ring
 * has a lock of its own (the pattern of anakryiko/wprof's rescue ring
 * buffer). ringbuf_submit() finds a record's ring from the record itself, so
 * sp_events.ringbuf_submit() submits either. */
static __always_inline void *sp_reserve(u64 size, int full, int failed)
{
    void *r = sp_events.ringbuf_reserve(size);
    if (r)
        return r;
    r = sp_rescue.ringbuf_reserve(size);
    if (r) {
        sp_count(SP_CNT_RESCUED);
        return r;
    }
    /* Room is reckoned in sp_events, the record's 8-byte header and padding included. */
    u64 scratch = 0;
    u64 unread = sp_events.ringbuf_output(&scratch, sizeof(scratch), BPF_RB_AVAIL_DATA);
    sp_count(unread + ((size + 8 + 7) & ~7ULL) <= SP_RINGBUF_BYTES ? failed : full);
    return 0;
}
