/* spanprobe provider module: rendered by spanprobe_tracer.kernel.render from a
 * provider's schema and SDT argument specs. It is shared by every provider
 * and every process whose probes have the same argument shapes (one compile
 * per shape set, not per provider or pid).
 *
 * Per span shape N (start probe and end probe argument types and locations):
 *   struct sp_start_N   what the start probe captured: time, thread, argument
 *                       words and string/bytes slots
 *   sp_starts_N         open spans, keyed by (tgid, span id): a hash map with no
 *                       preallocation, bounded by SP_MAX_OPEN; a full map drops
 *                       the start and counts it
 *   struct sp_span_N    the ring-buffer record of a finished span: header, end
 *                       time, the start struct copied whole, end arguments
 * and a handler for its start probes (store) and its end probes (look up,
 * apply the duration threshold, emit one record, delete). Event and plain
 * probe shapes get a handler that emits one SP_KIND_POINT record. The record
 * header carries the attachment's cookie, from which the tracer knows the
 * span's (or probe's) name and attribute names.
 *
 * Argument words hold the raw register (or memory) value; userspace masks and
 * sign-extends them to the declared type. A str argument is copied into a
 * slot of SP_STR_MAX + 2 bytes, so that userspace can tell a string of exactly
 * SP_STR_MAX bytes (kept whole) from a longer one (marked truncated). A bytes
 * argument's word is its [u32 length | bit31 SDK-truncated] header and its slot
 * holds up to SP_STR_MAX bytes of data (an otel_span payload's: up to the SDK's
 * 4096, kernel.layout.ROLE_CAPTURE). A bit set in a record's fail mask says
 * that argument could not be read from the process's memory.
 *
 * With a sampler, the start handler keeps its decision in two high bits of
 * the stored start's fail word and the end handler drops a sampled-out span
 * before the ring buffer; with span metrics, the end handler first counts
 * every span in the core module's metrics maps (kernel/sampling.py and
 * kernel/metrics.py render that code).
 *
 * Every record is submitted with BPF_RB_NO_WAKEUP: the tracer drains the ring
 * buffer on a timer, so no probe hit pays for waking it up.
 */
#include <uapi/linux/ptrace.h>

/*@COMMON@*/

struct sp_key {
    u32 tgid;
    u32 pad;
    u64 span_id;
};

/*@DECLARATIONS@*/

/*@HANDLERS@*/
