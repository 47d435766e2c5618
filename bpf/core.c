/* spanprobe core module: owns the shared ring buffer and counters.
 *
 * Rendered by spanprobe_tracer.kernel.render: SP_RINGBUF_BYTES and the path
 * matcher's macros are defined before this file, and common.h is prepended
 * with SP_CORE defined.
 *
 * It also holds the dlopen() watcher used by `spanprobe trace -- COMMAND`,
 * which must see a provider's probes from the very first hit: a provider is
 * a library the application dlopen()s at run time, so when a traced process
 * returns from dlopen() of something that looks like a provider, the watcher
 * stops it (SIGSTOP) and tells userspace, which attaches to the new provider
 * and resumes the process (SIGCONT). Other dlopen()s cost one uprobe hit.
 */

#define SP_SIGSTOP 19
#define SP_NAME_MAX 160

BPF_HASH(sp_dlopen_pending, u32, u8, 4096);

struct sp_load_rec {
    struct sp_hdr h;
};

/* Does the dlopen()ed path look like an SDK provider? The SDK opens memfds as
 * /proc/self/fd/N (or /proc/self/./fd/N) and files from a private directory
 * named spanprobe-PID-XXXXXX. False positives only cost a stop/resume.
 * SP_AT_PROC_SELF, SP_AT_PRIVATE_DIR and SP_PRIVATE_DIR_LEN are rendered by
 * kernel/render.py from spanprobe.abi.protocol (PROC_SELF, PRIVATE_DIR_PREFIX). */
static __always_inline int sp_provider_path(const char *name)
{
    if (SP_AT_PROC_SELF(name))
        return 1;
    for (int i = 0; i < SP_NAME_MAX - SP_PRIVATE_DIR_LEN; i++) {
        if (name[i] == 0)
            return 0;
        if (SP_AT_PRIVATE_DIR(name, i))
            return 1;
    }
    return 0;
}

int sp_dlopen_enter(struct pt_regs *ctx)
{
    char name[SP_NAME_MAX] = {};
    const char *path = (const char *)PT_REGS_PARM1(ctx);
    if (!path)
        return 0;
    if (bpf_probe_read_user_str(name, sizeof(name), path) <= 0)
        return 0;
    if (!sp_provider_path(name))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u8 one = 1;
    sp_dlopen_pending.update(&tid, &one);
    return 0;
}

int sp_dlopen_return(struct pt_regs *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    u8 *pending = sp_dlopen_pending.lookup(&tid);
    if (!pending)
        return 0;
    sp_dlopen_pending.delete(&tid);
    if (PT_REGS_RC(ctx) == 0)
        return 0;   /* dlopen failed: nothing was loaded */
    struct sp_load_rec *r = sp_reserve(sizeof(struct sp_load_rec), SP_CNT_LOAD_RB_FULL, SP_CNT_LOAD_RB_FULL);
    if (!r)
        return 0;   /* do not stop a process nobody will be told to resume */
    bpf_send_signal(SP_SIGSTOP);
    r->h.kind = SP_KIND_LOAD;
    r->h.shape = 0;
    r->h.program = 0;
    r->h.cookie = 0;
    r->h.pid = pid_tgid >> 32;
    r->h.tid = tid;
    sp_events.ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
    sp_count(SP_CNT_LOADS);
    return 0;
}
