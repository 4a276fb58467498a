//! llmprobe's kernel programs: uprobes on OpenSSL's read/write calls and tracepoints on socket
//! syscalls. They copy payload bytes into one ring buffer, track which fds are sockets, and learn
//! which socket an `SSL*` talks over. No kernel struct is read: only syscall arguments, uprobe
//! arguments and user memory. Every failed ring-buffer write is counted in `LOST`.
//!
//! Records (types in `llmprobe-common`): data records carry only what userspace cannot learn
//! otherwise (no comm; a TLS record's `fd` is -1, its socket is reported once per change as an
//! `EVENT_SSL_FD` control record); control records (open, close, SSL->fd, `SSL_free`, exec/mmap,
//! first TLS record written, exit) carry the thread's comm. Tracepoint arguments are read at the named `TP_*` offsets of
//! the kernel's format files.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target has no compare-and-swap, so `core`'s atomic types offer no
// `fetch_add`; the intrinsic compiles to the BPF atomic add.
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![allow(clippy::missing_safety_doc)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        bpf_probe_read_user, generated::bpf_probe_read_user as raw_probe_read_user,
    },
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use llmprobe_common::*;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);
/// Ring-buffer records that could not be written (index 0).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
/// What the kernel side refused or lost, by `llmprobe_common::counter` index.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
/// Connections that lost a record (ring buffer full, or over their share): their next record
/// carries `DATA_FLAG_LOST_BEFORE`, so userspace knows its view of the stream is stale.
#[map]
static LOSSY: LruHashMap<ConnKey, u8> = LruHashMap::with_max_entries(16384, 0);
/// Per-process window of ring-buffer bytes used (the fair share).
#[map]
static DATA_RATE: LruHashMap<u32, RateWindow> = LruHashMap::with_max_entries(16384, 0);
/// Per-process window of exec/mmap discovery hints sent.
#[map]
static CTRL_RATE: LruHashMap<u32, RateWindow> = LruHashMap::with_max_entries(16384, 0);
/// Tracked sockets per process.
#[map]
static SOCK_COUNT: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);
#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
/// The scope: tgids traced (`CONFIG_SCOPE_ALLOW`) or not traced (`CONFIG_SCOPE_DENY`), kept by
/// userspace from the selectors; a forked child inherits its parent's entry
/// (`CONFIG_SCOPE_INHERIT`) until userspace has looked at it, within its user's and the node's
/// share (`INHERITED`); an exit removes the entry.
#[map]
static SCOPE: HashMap<u32, u8> = HashMap::with_max_entries(SCOPE_MAP_ENTRIES, 0);
/// Children the kernel listed in `SCOPE` by inheritance (tgid -> the forking parent's uid, the
/// user charged), until the child exits. Kept apart from `SCOPE`, whose entries userspace
/// overwrites and removes: a charge is returned exactly once, by the exit that removes it here,
/// whatever userspace did with the `SCOPE` entry meanwhile (so userspace's own entries are never
/// charged, and a charge never leaks). At most `SCOPE_INHERITED_PER_NODE` are charged at once.
#[map]
static INHERITED: HashMap<u32, u32> = HashMap::with_max_entries(SCOPE_MAP_ENTRIES, 0);
/// Live inherited entries per user (uid -> count, changed atomically). An LRU: a user with
/// many ids can only evict counts (which resets them, never blocks a user), and the node's
/// count in `INHERITED_NODE` bounds them all.
#[map]
static INHERITED_UID: LruHashMap<u32, i64> = LruHashMap::with_max_entries(4096, 0);
/// Live inherited entries of all users (index 0, changed atomically).
#[map]
static INHERITED_NODE: Array<i64> = Array::with_max_entries(1, 0);
/// Per-process window of TLS hello records sent (`--scope auto`).
#[map]
static HELLO_RATE: LruHashMap<u32, RateWindow> = LruHashMap::with_max_entries(16384, 0);
/// Per-user window of TLS hello records sent.
#[map]
static HELLO_UID_RATE: LruHashMap<u32, RateWindow> = LruHashMap::with_max_entries(4096, 0);
/// Per-process window of fork hints caused.
#[map]
static FORK_RATE: LruHashMap<u32, RateWindow> = LruHashMap::with_max_entries(16384, 0);
/// Per-user window of fork hints caused.
#[map]
static FORK_UID_RATE: LruHashMap<u32, RateWindow> = LruHashMap::with_max_entries(4096, 0);
/// The node's windows: TLS hellos ([`NODE_HELLO`]) and fork hints ([`NODE_FORK`]).
#[map]
static NODE_RATE: Array<RateWindow> = Array::with_max_entries(2, 0);
/// `NODE_RATE` index of the node's TLS hello window.
const NODE_HELLO: u32 = 0;
/// `NODE_RATE` index of the node's fork hint window.
const NODE_FORK: u32 = 1;
#[map]
static SOCKS: LruHashMap<SockKey, SockInfo> = LruHashMap::with_max_entries(65536, 0);
/// Connections userspace asked us to stop capturing.
#[map]
static MUTED: LruHashMap<ConnKey, u8> = LruHashMap::with_max_entries(65536, 0);
/// The socket fd last reported (`EVENT_SSL_FD`) for each SSL object, so a link is reported once.
#[map]
static SSL_FDS: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(65536, 0);
#[map]
static PENDING_SYS: LruHashMap<u64, SysArgs> = LruHashMap::with_max_entries(16384, 0);
#[map]
static PENDING_SSL: LruHashMap<u64, SslArgs> = LruHashMap::with_max_entries(16384, 0);

const K_READ: u32 = 1;
const K_WRITE: u32 = 2;
const K_READV: u32 = 3;
const K_WRITEV: u32 = 4;
const K_RECVMSG: u32 = 5;
const K_SENDMSG: u32 = 6;
const K_CONNECT: u32 = 7;
const K_ACCEPT: u32 = 8;

const OP_READ: u32 = 1;
const OP_READ_EX: u32 = 2;
const OP_WRITE: u32 = 3;
const OP_WRITE_EX: u32 = 4;

// Argument offsets in the syscall tracepoints' records, as the kernel's format files list them
// (/sys/kernel/tracing/events/syscalls/<name>/format). Every syscall argument is an 8-byte field
// after the 8-byte common header and the 4-byte `__syscall_nr` (padded to 16).
/// sys_enter_{read,write,readv,writev,recvfrom,sendto,recvmsg,sendmsg,connect,accept,accept4,close}:
/// `fd`, the first argument.
const TP_ENTER_FD: usize = 16;
/// sys_enter_{read,write}: `buf`; sys_enter_{recvfrom,sendto}: `ubuf`/`buff`;
/// sys_enter_{readv,writev}: `vec` (the iovec array); sys_enter_{recvmsg,sendmsg}: `msg`
/// (a `struct user_msghdr *`); sys_enter_connect: `uservaddr`; sys_enter_accept(4):
/// `upeer_sockaddr`. The second argument.
const TP_ENTER_BUF: usize = 24;
/// sys_enter_{read,write}: `count`; sys_enter_{recvfrom,sendto}: `size`/`len`;
/// sys_enter_{readv,writev}: `vlen`. The third argument (for recvmsg/sendmsg it is `flags`,
/// unused: their iovec count comes from the msghdr).
const TP_ENTER_LEN: usize = 32;
/// sys_enter_mmap: `prot`, the third argument.
const TP_MMAP_PROT: usize = 32;
/// sys_enter_mmap: `fd`, the fifth argument.
const TP_MMAP_FD: usize = 48;
/// sys_exit_*: `ret`, the return value.
const TP_EXIT_RET: usize = 16;
/// `struct user_msghdr` (user ABI, x86_64/aarch64): `msg_iov` and `msg_iovlen`.
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;

const EINPROGRESS: i64 = -115;
const PROT_EXEC: u64 = 4;
/// `bpf_ringbuf_query` flag: bytes written and not yet consumed.
const BPF_RB_AVAIL_DATA: u64 = 0;
/// `bpf_ringbuf_query`: the ring's size (set by userspace at load, `--ring-buffer-size`).
const BPF_RB_RING_SIZE: u64 = 1;
/// `bpf_ringbuf_submit`/`output` flag: do not wake the reader.
const BPF_RB_NO_WAKEUP: u64 = 1;

/// Submit flags: the reader is woken only once `RING_WAKE_BYTES` wait in the ring; below that it
/// drains on its own clock (`RING_DRAIN_EVERY` in userspace). One wakeup per record cost a context
/// switch per record in the reader and the tracker; coalesced, a busy ring still wakes it at once.
/// (`BPF_RB_FORCE_WAKEUP` is 2: 1 + the comparison, without a branch for the verifier.)
#[inline(always)]
fn wake_flags() -> u64 {
    BPF_RB_NO_WAKEUP + u64::from(EVENTS.query(BPF_RB_AVAIL_DATA) >= RING_WAKE_BYTES as u64)
}

/// Arguments of a syscall in flight on one thread, saved at enter for use at exit.
#[repr(C)]
#[derive(Clone, Copy)]
struct SysArgs {
    kind: u32,
    fd: i32,
    buf: u64,
    len: u64,
    ts: u64,
    generation: u64,
}

/// Arguments of an SSL call in flight on one thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct SslArgs {
    op: u32,
    _pad: u32,
    ssl: u64,
    buf: u64,
    len_ptr: u64,
    ts: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

/// What every data event of one call shares.
#[repr(C)]
struct EmitMeta {
    tgid: u32,
    tid: u32,
    fd: i32,
    direction: u8,
    source: u8,
    /// `DATA_FLAG_*`, filled by `start_call`.
    flags: u8,
    _pad: u8,
    conn_id: u64,
    ts: u64,
    total: u32,
    _pad2: u32,
}

/// Whether the process is in scope: every program checks it first, so an out-of-scope process
/// costs one array and one hash lookup per syscall.
#[inline(always)]
fn should_trace(tgid: u32) -> bool {
    match CONFIG.get(0) {
        Some(cfg) => {
            if cfg.self_tgid == tgid {
                return false;
            }
            let mode = cfg.flags & (CONFIG_SCOPE_ALLOW | CONFIG_SCOPE_DENY);
            if mode == 0 {
                return true;
            }
            // SAFETY: the value is a plain u8 and is only read.
            let listed = unsafe { SCOPE.get(&tgid) }.is_some();
            listed == (mode & CONFIG_SCOPE_ALLOW != 0)
        }
        None => true,
    }
}

/// The `CONFIG_*` bits (0 before userspace has configured the programs).
#[inline(always)]
fn config_flags() -> u32 {
    CONFIG.get(0).map_or(0, |c| c.flags)
}

#[inline(always)]
fn count_lost() {
    if let Some(p) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; a preempting program may race the increment, which can only
        // undercount by one.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn count(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: as in `count_lost`.
        unsafe { *p += 1 };
    }
}

/// `Result` of a map insert: a failure is counted (an LRU map evicts instead of failing).
#[inline(always)]
fn inserted<E>(r: Result<(), E>) {
    if r.is_err() {
        count(counter::MAP_INSERT_FAILED);
    }
}

/// Charges `used` to `tgid`'s current window in `map`; returns the amount used before it, or
/// 0 when the window (of `window_ns`) just started.
#[inline(always)]
fn charge(map: &LruHashMap<u32, RateWindow>, tgid: u32, used: u64, window_ns: u64) -> u64 {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match map.get_ptr_mut(&tgid) {
        // SAFETY: map value pointer valid for this program run.
        Some(w) => charge_window(unsafe { &mut *w }, now, used, window_ns),
        None => {
            let w = RateWindow {
                start_ns: now,
                used,
            };
            inserted(map.insert(&tgid, &w, 0));
            0
        }
    }
}

/// Charges one to the node's window `idx` in `NODE_RATE` (an array: nothing evicts it, however
/// many users churn the per-user maps); returns the amount used before it.
#[inline(always)]
fn charge_node(idx: u32) -> u64 {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match NODE_RATE.get_ptr_mut(idx) {
        // SAFETY: map value pointer valid for this program run.
        Some(w) => charge_window(unsafe { &mut *w }, now, 1, 1_000_000_000),
        None => u64::MAX,
    }
}

/// The window logic of [`charge`]: concurrent updates from other CPUs may lose an increment,
/// which only makes the window more lenient.
#[inline(always)]
fn charge_window(w: &mut RateWindow, now: u64, used: u64, window_ns: u64) -> u64 {
    if now.wrapping_sub(w.start_ns) > window_ns {
        w.start_ns = now;
        w.used = used;
        0
    } else {
        let before = w.used;
        w.used = before.saturating_add(used);
        before
    }
}

/// Exec/mmap discovery hints are rate-limited per process: a process that maps executable
/// files in a loop cannot flood the ring buffer or the discovery thread (counted).
#[inline(always)]
fn ctrl_allowed(tgid: u32) -> bool {
    if charge(&CTRL_RATE, tgid, 1, 1_000_000_000) >= CTRL_EVENTS_PER_SECOND {
        count(counter::CTRL_RATE_LIMITED);
        return false;
    }
    true
}

/// Starts emitting one call's bytes: fails when the ring buffer is under pressure and the
/// process has already used its share of the window (counted, and the connection marked lossy);
/// otherwise sets the meta's lost-before flag from `LOSSY`.
#[inline(always)]
fn start_call(meta: &mut EmitMeta, bytes: u32) -> bool {
    let key = mute_key(meta.tgid, meta.conn_id);
    let emitted = if bytes > MAX_CHUNKS * MAX_DATA as u32 {
        MAX_CHUNKS * MAX_DATA as u32
    } else {
        bytes
    };
    let before = charge(&DATA_RATE, meta.tgid, emitted as u64, FAIR_WINDOW_NS);
    if before > FAIR_SHARE_BYTES
        && EVENTS.query(BPF_RB_AVAIL_DATA) > EVENTS.query(BPF_RB_RING_SIZE) / 2
    {
        count(counter::FAIR_SHARE);
        let _ = LOSSY.insert(&key, &1, 0);
        return false;
    }
    // SAFETY: value only read.
    if unsafe { LOSSY.get(&key) }.is_some() {
        meta.flags |= DATA_FLAG_LOST_BEFORE;
        let _ = LOSSY.remove(&key);
    }
    true
}

/// The header and comm of a control record about the current thread.
#[inline(always)]
fn control(kind: u32, fd: i32, conn_id: u64) -> ControlEvent {
    let pid_tgid = bpf_get_current_pid_tgid();
    ControlEvent {
        hdr: EventHeader {
            kind,
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            fd,
            conn_id,
            // SAFETY: reading the monotonic clock has no preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
        },
        comm: bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]),
    }
}

/// Sends a [`ControlEvent`] (close, SSL->fd link, `SSL_free`, exec/mmap hint, exit). An exec/mmap
/// hint (rate-limited per process) wakes the reader at once, even with records waiting: a new
/// program's first TLS write can come milliseconds after it maps libssl, and discovery must
/// probe the file before it (the reader's own drain clock is 20 to 320 ms).
#[inline(always)]
fn emit_control(kind: u32, fd: i32, conn_id: u64) {
    let flags = if kind == EVENT_EXEC_MAP {
        BPF_RB_FORCE_WAKEUP
    } else {
        wake_flags()
    };
    if EVENTS
        .output::<ControlEvent>(&control(kind, fd, conn_id), flags)
        .is_err()
    {
        count_lost();
    }
}

/// Sends a [`ConnOpenEvent`] for a new socket and its peer; `start_ns` is the syscall's entry.
#[inline(always)]
fn emit_conn_open(
    fd: i32,
    generation: u64,
    family: u16,
    port: u16,
    addr: [u8; 16],
    accept: bool,
    start_ns: u64,
) {
    let ev = ConnOpenEvent {
        ctl: control(EVENT_CONN_OPEN, fd, generation),
        family,
        port,
        flags: if accept {
            OPEN_FLAG_ACCEPT
        } else {
            OPEN_FLAG_CONNECT
        },
        addr,
        start_ns,
    };
    if EVENTS.output::<ConnOpenEvent>(&ev, wake_flags()).is_err() {
        count_lost();
    }
}

/// Copies `n` (<= N) user bytes at `src` into a data record of payload class `N` reserved in
/// the ring buffer. The class is chosen once per call, from its length (see `emit_buf`), so the
/// verifier walks one loop per class rather than a class choice per piece.
#[inline(always)]
fn emit_class<const N: usize>(meta: &EmitMeta, src: u64, n: u32, offset: u32) {
    let Some(mut entry) = EVENTS.reserve::<DataEventOf<N>>(0) else {
        count_lost();
        let _ = LOSSY.insert(&mute_key(meta.tgid, meta.conn_id), &1, 0);
        return;
    };
    // The class branch already bounds `n`, but LLVM then drops this clamp and the verifier cannot
    // see the bound through the register copies: a volatile read keeps the clamp in the code.
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) } as u64;
    let n = if n > N as u64 { N as u64 } else { n };
    let ev = entry.as_mut_ptr();
    // The payload is copied first and the header written whole after it (one store sequence,
    // `len` known): measured smaller than header, copy, then `len`.
    // SAFETY: `ev` points at the reserved record, `DATA_HEADER_SIZE + N` bytes, ours until
    // submit; the copy is bounded by N, the size of `data`.
    unsafe {
        let dst = (*ev).data.as_mut_ptr();
        let ok = raw_probe_read_user(
            dst as *mut core::ffi::c_void,
            n as u32,
            src as *const core::ffi::c_void,
        ) == 0;
        (*ev).head = DataHeader {
            hdr: EventHeader {
                kind: EVENT_DATA,
                tgid: meta.tgid,
                tid: meta.tid,
                fd: meta.fd,
                conn_id: meta.conn_id,
                ts_ns: meta.ts,
            },
            direction: meta.direction,
            source: meta.source,
            flags: meta.flags,
            _pad: 0,
            len: if ok { n as u32 } else { 0 },
            offset,
            total_len: meta.total,
        };
    }
    entry.submit(wake_flags());
}

/// Sends `len` bytes at user address `src` as data events of at most MAX_DATA bytes each. A
/// buffer longer than MAX_CHUNKS pieces sends its head and its last piece: the middle is a gap
/// userspace sees from the offsets, and the tail keeps what JSON bodies put last (the OpenAI SDK
/// writes `model` and `stream` after a long `messages` array).
#[inline(always)]
fn emit_buf(meta: &mut EmitMeta, src: u64, len: u32) {
    if !start_call(meta, len) {
        return;
    }
    let meta = &*meta;
    if len as usize <= DATA_CLASS_SMALL {
        emit_class::<DATA_CLASS_SMALL>(meta, src, len, 0);
    } else if len as usize <= DATA_CLASS_MEDIUM {
        emit_class::<DATA_CLASS_MEDIUM>(meta, src, len, 0);
    } else {
        let max = MAX_DATA as u32;
        let mut sent: u32 = 0;
        for i in 0..MAX_CHUNKS {
            if sent >= len {
                break;
            }
            if i == MAX_CHUNKS - 1 && len - sent > max {
                sent = len - max;
            }
            let rem = len - sent;
            let n: u32 = if rem > max { max } else { rem };
            emit_class::<MAX_DATA>(meta, src + sent as u64, n, sent);
            sent += n;
        }
    }
}

/// Emits the first `total` bytes spread over an iovec array: up to MAX_DATA bytes of each of the
/// first MAX_IOV entries. Bytes of an entry beyond MAX_DATA are not sent; the offsets of the next
/// pieces let userspace see them as a gap. (One piece per entry keeps the verifier's path count
/// linear; HTTP writers use small iovecs: head, body, chunk framing.)
#[inline(always)]
fn emit_iov(meta: &mut EmitMeta, iov: u64, iovcnt: u64, total: u32) {
    if !start_call(meta, total) {
        return;
    }
    let meta = &*meta;
    if total as usize <= DATA_CLASS_SMALL {
        emit_iov_in::<DATA_CLASS_SMALL>(meta, iov, iovcnt, total);
    } else if total as usize <= DATA_CLASS_MEDIUM {
        emit_iov_in::<DATA_CLASS_MEDIUM>(meta, iov, iovcnt, total);
    } else {
        emit_iov_in::<MAX_DATA>(meta, iov, iovcnt, total);
    }
}

#[inline(always)]
fn emit_iov_in<const N: usize>(meta: &EmitMeta, iov: u64, iovcnt: u64, total: u32) {
    let mut done: u32 = 0;
    for i in 0..MAX_IOV {
        if (i as u64) >= iovcnt || done >= total {
            break;
        }
        // SAFETY: reading user memory through the helper, which faults safely.
        let Ok(v) = (unsafe { bpf_probe_read_user((iov + i as u64 * 16) as *const IoVec) }) else {
            break;
        };
        let rem = total - done;
        let len = if v.len > rem as u64 {
            rem
        } else {
            v.len as u32
        };
        if len > 0 {
            emit_class::<N>(meta, v.base, len, done);
        }
        done += len;
    }
}

/// TLS record type of a handshake record (a ClientHello's).
const TLS_HANDSHAKE: u8 = 0x16;
/// `task_newtask`'s `clone_flags`: the new task is a thread of its parent's process.
const CLONE_THREAD: u64 = 0x10000;
/// `bpf_ringbuf_submit` flag: wake the reader now.
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Sends the first bytes of a socket's first TLS record when it is a handshake record written
/// by the process (a ClientHello; `--scope auto`), waking the reader at once: userspace reads the
/// server name and may attach the process's uprobes before its first `SSL_write`, one handshake
/// round trip later. Bounded per process, per user and per node (refusals counted), so no user
/// can flood the ring or the reader, nor use up the hellos of others.
#[inline(always)]
fn emit_hello(pid_tgid: u64, fd: i32, generation: u64, src: u64, n: u64) {
    // SAFETY: user memory read through the helper.
    let Ok(kind) = (unsafe { bpf_probe_read_user(src as *const u8) }) else {
        return;
    };
    if kind != TLS_HANDSHAKE {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let uid = bpf_get_current_uid_gid() as u32;
    if charge(&HELLO_RATE, tgid, 1, 1_000_000_000) >= HELLO_EVENTS_PER_SECOND
        || charge(&HELLO_UID_RATE, uid, 1, 1_000_000_000) >= HELLO_EVENTS_PER_UID_SECOND
        || charge_node(NODE_HELLO) >= HELLO_EVENTS_PER_NODE_SECOND
    {
        count(counter::HELLO_RATE_LIMITED);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<TlsHelloEvent>(0) else {
        count_lost();
        return;
    };
    // As in `emit_class`: a volatile read keeps the clamp the verifier needs.
    // SAFETY: reading a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = if n > TLS_HELLO_BYTES as u64 {
        TLS_HELLO_BYTES as u64
    } else {
        n
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at the reserved record, ours until submit; the copy is bounded by
    // TLS_HELLO_BYTES, the size of `data`.
    unsafe {
        let ok = raw_probe_read_user(
            (*ev).data.as_mut_ptr() as *mut core::ffi::c_void,
            n as u32,
            src as *const core::ffi::c_void,
        ) == 0;
        (*ev).hdr = EventHeader {
            kind: EVENT_TLS_HELLO,
            tgid,
            tid: pid_tgid as u32,
            fd,
            conn_id: generation,
            ts_ns: bpf_ktime_get_ns(),
        };
        (*ev).len = if ok { n as u32 } else { 0 };
        (*ev).direction = DIR_EGRESS as u32;
    }
    entry.submit(BPF_RB_FORCE_WAKEUP);
}

/// True when the bytes look like the start of a TLS record (handshake, alert, CCS, app data).
#[inline(always)]
fn looks_like_tls(src: u64) -> bool {
    // SAFETY: user memory read through the helper.
    let Ok(b) = (unsafe { bpf_probe_read_user(src as *const [u8; 3]) }) else {
        return false;
    };
    (b[0] >= 0x14 && b[0] <= 0x17) && b[1] == 0x03 && b[2] <= 0x04
}

/// Key of `MUTED` and `LOSSY`: one connection (`SSL*` or socket generation) of a process.
#[inline(always)]
fn mute_key(tgid: u32, conn_id: u64) -> ConnKey {
    ConnKey {
        tgid,
        _pad: 0,
        conn_id,
    }
}

/// Key of `SSL_FDS`: one SSL object of a process.
#[inline(always)]
fn ssl_key(tgid: u32, ssl: u64) -> SslKey {
    SslKey { tgid, _pad: 0, ssl }
}

// ---------------------------------------------------------------------------------------------
// Socket syscalls
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn enter_io(ctx: &TracePointContext, kind: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return 0;
    }
    // SAFETY: offsets from the syscalls:sys_enter_* tracepoint formats (see `TP_ENTER_*`).
    let (fd, buf, len) = unsafe {
        (
            ctx.read_at::<u64>(TP_ENTER_FD).unwrap_or(u64::MAX) as i32,
            ctx.read_at::<u64>(TP_ENTER_BUF).unwrap_or(0),
            ctx.read_at::<u64>(TP_ENTER_LEN).unwrap_or(0),
        )
    };
    let key = SockKey { tgid, fd };
    let Some(sock) = SOCKS.get_ptr_mut(&key) else {
        return 0;
    };
    // SAFETY: map value pointer valid for this program run.
    let sock = unsafe { &mut *sock };
    // A syscall inside an SSL call on this thread moves ciphertext: learn the fd, emit nothing.
    // SAFETY: value only read.
    if let Some(ssl) = unsafe { PENDING_SSL.get(&pid_tgid) } {
        // The socket's first bytes written inside an SSL call: the handshake ran inside the
        // first `SSL_write` (or `SSL_read`); its first record is written now.
        if sock.flags & SOCK_FLAG_SEEN_DATA == 0 && matches!(kind, K_WRITE | K_WRITEV | K_SENDMSG) {
            emit_control(EVENT_TLS_START, fd, sock.generation);
        }
        sock.flags |= SOCK_FLAG_TLS | SOCK_FLAG_SEEN_DATA;
        let sk = ssl_key(tgid, ssl.ssl);
        // SAFETY: value only read.
        let prev = unsafe { SSL_FDS.get(&sk) }.copied();
        if prev != Some(fd) {
            if prev.is_none() {
                count(counter::SSL_FDS_INSERTED);
            }
            inserted(SSL_FDS.insert(&sk, &fd, 0));
            emit_control(EVENT_SSL_FD, fd, ssl.ssl);
        }
        return 0;
    }
    if sock.flags & SOCK_FLAG_TLS != 0 {
        return 0;
    }
    // SAFETY: value only read.
    if unsafe { MUTED.get(&mute_key(tgid, sock.generation)) }.is_some() {
        return 0;
    }
    let args = SysArgs {
        kind,
        fd,
        buf,
        len,
        // SAFETY: no preconditions.
        ts: unsafe { bpf_ktime_get_ns() },
        generation: sock.generation,
    };
    inserted(PENDING_SYS.insert(&pid_tgid, &args, 0));
    0
}

/// Takes the arguments saved at syscall entry and the return value.
#[inline(always)]
fn take_pending(ctx: &TracePointContext) -> Option<(u64, SysArgs, i64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before removal.
    let args = (unsafe { PENDING_SYS.get(&pid_tgid) }).copied()?;
    let _ = PENDING_SYS.remove(&pid_tgid);
    // SAFETY: sys_exit_* tracepoints carry the return value at `TP_EXIT_RET`.
    let ret = unsafe { ctx.read_at::<i64>(TP_EXIT_RET) }.unwrap_or(-1);
    Some((pid_tgid, args, ret))
}

#[inline(always)]
fn exit_sock(ctx: &TracePointContext) -> u32 {
    let Some((pid_tgid, args, ret)) = take_pending(ctx) else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    match args.kind {
        K_CONNECT if ret == 0 || ret == EINPROGRESS => {
            register_socket(tgid, args.fd, args.buf, false, args.ts)
        }
        K_ACCEPT if ret >= 0 => register_socket(tgid, ret as i32, args.buf, true, args.ts),
        _ => {}
    }
    0
}

#[inline(always)]
fn exit_io(ctx: &TracePointContext, vectored: bool) -> u32 {
    let Some((pid_tgid, args, ret)) = take_pending(ctx) else {
        return 0;
    };
    let tgid = (pid_tgid >> 32) as u32;
    if ret <= 0 || args.kind == K_CONNECT || args.kind == K_ACCEPT {
        return 0;
    }
    let total = if ret > u32::MAX as i64 {
        u32::MAX
    } else {
        ret as u32
    };
    let direction = match args.kind {
        K_READ | K_READV | K_RECVMSG => DIR_INGRESS,
        _ => DIR_EGRESS,
    };
    let (mut iov, mut iovcnt) = (args.buf, args.len);
    if args.kind == K_RECVMSG || args.kind == K_SENDMSG {
        // SAFETY: user memory read through the helper.
        unsafe {
            iov = bpf_probe_read_user((args.buf + MSGHDR_IOV) as *const u64).unwrap_or(0);
            iovcnt = bpf_probe_read_user((args.buf + MSGHDR_IOVLEN) as *const u64).unwrap_or(0);
        }
    }
    let (first, first_len) = if vectored {
        // SAFETY: user memory read through the helper.
        unsafe { bpf_probe_read_user(iov as *const IoVec) }
            .map(|v| (v.base, v.len))
            .unwrap_or((0, 0))
    } else {
        (args.buf, total as u64)
    };
    // The first payload on a socket tells whether it carries TLS records.
    let key = SockKey { tgid, fd: args.fd };
    if let Some(sock) = SOCKS.get_ptr_mut(&key) {
        // SAFETY: map value pointer valid for this program run.
        let sock = unsafe { &mut *sock };
        if sock.generation != args.generation {
            return 0;
        }
        if sock.flags & SOCK_FLAG_SEEN_DATA == 0 {
            sock.flags |= SOCK_FLAG_SEEN_DATA;
            if looks_like_tls(first) {
                sock.flags |= SOCK_FLAG_TLS;
                if direction == DIR_EGRESS {
                    // Once per socket: when its first TLS record (the ClientHello) was written.
                    let mut ev = control(EVENT_TLS_START, args.fd, args.generation);
                    ev.hdr.ts_ns = args.ts;
                    if EVENTS.output::<ControlEvent>(&ev, wake_flags()).is_err() {
                        count_lost();
                    }
                }
                if direction == DIR_EGRESS && config_flags() & CONFIG_TLS_HELLO != 0 {
                    let n = if first_len > total as u64 {
                        total as u64
                    } else {
                        first_len
                    };
                    emit_hello(pid_tgid, args.fd, args.generation, first, n);
                }
                return 0;
            }
        }
    } else {
        return 0;
    }
    let mut meta = EmitMeta {
        tgid,
        tid: pid_tgid as u32,
        fd: args.fd,
        direction,
        source: SRC_SOCKET,
        flags: 0,
        _pad: 0,
        conn_id: args.generation,
        // Writes are stamped when they start, reads when the bytes have arrived.
        // SAFETY: no preconditions.
        ts: if direction == DIR_EGRESS {
            args.ts
        } else {
            unsafe { bpf_ktime_get_ns() }
        },
        total,
        _pad2: 0,
    };
    if vectored {
        emit_iov(&mut meta, iov, iovcnt, total);
    } else {
        emit_buf(&mut meta, args.buf, total);
    }
    0
}

/// Records a new socket fd and reports it with its peer address read from `sockaddr`;
/// `start_ns` is the connect/accept's entry.
#[inline(always)]
fn register_socket(tgid: u32, fd: i32, sockaddr: u64, accept: bool, start_ns: u64) {
    let mut family: u16 = 0;
    let mut port: u16 = 0;
    let mut addr = [0u8; 16];
    if sockaddr != 0 {
        // SAFETY: user memory read through the helper.
        family = unsafe { bpf_probe_read_user(sockaddr as *const u16) }.unwrap_or(0);
        // SAFETY: as above.
        let p = unsafe { bpf_probe_read_user((sockaddr + 2) as *const u16) }.unwrap_or(0);
        port = u16::from_be(p);
        if family == AF_INET {
            // SAFETY: as above.
            if let Ok(a) = unsafe { bpf_probe_read_user((sockaddr + 4) as *const [u8; 4]) } {
                addr[..4].copy_from_slice(&a);
            }
        } else if family == AF_INET6 {
            // SAFETY: as above.
            addr = unsafe { bpf_probe_read_user((sockaddr + 8) as *const [u8; 16]) }
                .unwrap_or([0; 16]);
        } else if !(accept && family == 0) {
            // Unix and other non-IP sockets are not HTTP-over-TCP traffic.
            return;
        }
    }
    // SAFETY: no preconditions.
    let generation = unsafe { bpf_ktime_get_ns() } | GENERATION_TAG;
    let info = SockInfo {
        generation,
        flags: 0,
        _pad: 0,
    };
    let key = SockKey { tgid, fd };
    // SAFETY: value only read.
    if unsafe { SOCKS.get(&key) }.is_none() {
        // A new socket counts against its process's share of the table.
        match SOCK_COUNT.get_ptr_mut(&tgid) {
            // SAFETY: map value pointer valid for this program run.
            Some(n) => unsafe {
                if *n >= MAX_SOCKS_PER_PROCESS {
                    count(counter::SOCKS_PER_PROCESS);
                    return;
                }
                *n += 1;
            },
            None => inserted(SOCK_COUNT.insert(&tgid, &1, 0)),
        }
        count(counter::SOCKS_INSERTED);
    }
    inserted(SOCKS.insert(&key, &info, 0));
    emit_conn_open(fd, generation, family, port, addr, accept, start_ns);
}

macro_rules! io_enter {
    ($fn:ident, $name:literal, $kind:expr) => {
        #[tracepoint(category = "syscalls", name = $name)]
        pub fn $fn(ctx: TracePointContext) -> u32 {
            enter_io(&ctx, $kind)
        }
    };
}

io_enter!(sys_enter_read, "sys_enter_read", K_READ);
io_enter!(sys_enter_write, "sys_enter_write", K_WRITE);
io_enter!(sys_enter_readv, "sys_enter_readv", K_READV);
io_enter!(sys_enter_writev, "sys_enter_writev", K_WRITEV);
io_enter!(sys_enter_recvfrom, "sys_enter_recvfrom", K_READ);
io_enter!(sys_enter_sendto, "sys_enter_sendto", K_WRITE);
io_enter!(sys_enter_recvmsg, "sys_enter_recvmsg", K_RECVMSG);
io_enter!(sys_enter_sendmsg, "sys_enter_sendmsg", K_SENDMSG);
/// Exit of read/write/recvfrom/sendto: one user buffer.
#[tracepoint(category = "syscalls", name = "sys_exit_rw")]
pub fn sys_exit_rw(ctx: TracePointContext) -> u32 {
    exit_io(&ctx, false)
}
/// Exit of readv/writev/recvmsg/sendmsg: an iovec array.
#[tracepoint(category = "syscalls", name = "sys_exit_vec")]
pub fn sys_exit_vec(ctx: TracePointContext) -> u32 {
    exit_io(&ctx, true)
}
/// Exit of connect/accept/accept4.
#[tracepoint(category = "syscalls", name = "sys_exit_sock")]
pub fn sys_exit_sock(ctx: TracePointContext) -> u32 {
    exit_sock(&ctx)
}

#[tracepoint(category = "syscalls", name = "sys_enter_connect")]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    save_sock_args(&ctx, K_CONNECT)
}

/// accept and accept4 share the argument layout (`fd`, `upeer_sockaddr`).
#[tracepoint(category = "syscalls", name = "sys_enter_accept")]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    save_sock_args(&ctx, K_ACCEPT)
}

#[inline(always)]
fn save_sock_args(ctx: &TracePointContext, kind: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !should_trace((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: syscalls:sys_enter_connect/accept(4): `fd`, then the sockaddr pointer.
    let (fd, addr) = unsafe {
        (
            ctx.read_at::<u64>(TP_ENTER_FD).unwrap_or(u64::MAX) as i32,
            ctx.read_at::<u64>(TP_ENTER_BUF).unwrap_or(0),
        )
    };
    let args = SysArgs {
        kind,
        fd,
        buf: addr,
        len: 0,
        // SAFETY: no preconditions.
        ts: unsafe { bpf_ktime_get_ns() },
        generation: 0,
    };
    inserted(PENDING_SYS.insert(&pid_tgid, &args, 0));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_close")]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: syscalls:sys_enter_close: `fd`.
    let fd = unsafe { ctx.read_at::<u64>(TP_ENTER_FD) }.unwrap_or(u64::MAX) as i32;
    let key = SockKey { tgid, fd };
    // SAFETY: value copied out before removal.
    let Some(info) = (unsafe { SOCKS.get(&key) }).copied() else {
        return 0;
    };
    if SOCKS.remove(&key).is_ok() {
        count(counter::SOCKS_REMOVED);
        if let Some(n) = SOCK_COUNT.get_ptr_mut(&tgid) {
            // SAFETY: map value pointer valid for this program run.
            unsafe { *n = (*n).saturating_sub(1) };
        }
    }
    let _ = MUTED.remove(&mute_key(tgid, info.generation));
    // For a TLS socket userspace also ends the SSL connections it saw on this fd.
    emit_control(EVENT_CONN_CLOSE, fd, info.generation);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_mmap")]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !should_trace((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: syscalls:sys_enter_mmap: `prot` and `fd` (see `TP_MMAP_*`).
    let (prot, fd) = unsafe {
        (
            ctx.read_at::<u64>(TP_MMAP_PROT).unwrap_or(0),
            ctx.read_at::<u64>(TP_MMAP_FD).unwrap_or(u64::MAX) as i32,
        )
    };
    if prot & PROT_EXEC != 0 && fd >= 0 && ctrl_allowed((pid_tgid >> 32) as u32) {
        emit_control(EVENT_EXEC_MAP, fd, 0);
    }
    0
}

/// An exec sends a discovery hint: from a traced process (its new program may map a TLS
/// library), and from every process when the selection is by name or cgroup (the new program
/// may enter or leave the scope).
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let inherit = config_flags() & CONFIG_SCOPE_INHERIT != 0;
    if !(inherit || should_trace(tgid)) || !ctrl_allowed(tgid) {
        return 0;
    }
    emit_control(EVENT_EXEC_MAP, -1, 0);
    0
}

/// `bpf_map_update_elem` flag: only create, never overwrite.
const BPF_NOEXIST: u64 = 1;

/// Adds `delta` to a counter in a map value, atomically (the result unused, it is the BPF
/// `lock add` without fetch: no update lost between CPUs, on every kernel with BPF).
#[inline(always)]
fn add_count(p: *mut i64, delta: i64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    // SAFETY: `p` is a map value pointer, valid and 8-byte aligned for this program run.
    unsafe { atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(p, delta) };
}

/// Charges the inherited `SCOPE` entry of `child` to `uid` (the forking parent's): false when
/// the user or the node already holds its share (`SCOPE_INHERITED_PER_UID`/`_PER_NODE`; the
/// check and the add are not one step, so concurrent forks on several CPUs may pass the share
/// by at most one each). A child already charged (a stale entry from an exit this program
/// missed) keeps that charge.
#[inline(always)]
fn charge_inherited(child: u32, uid: u32) -> bool {
    // SAFETY: value only read.
    if unsafe { INHERITED.get(&child) }.is_some() {
        return true;
    }
    let Some(node) = INHERITED_NODE.get_ptr_mut(0) else {
        return false;
    };
    let user = match INHERITED_UID.get_ptr_mut(&uid) {
        Some(p) => p,
        None => {
            // NOEXIST: a count another CPU just created is kept, never replaced (a replaced
            // LRU element is recycled at once, and an add through its pointer would land in
            // another user's count).
            let _ = INHERITED_UID.insert(&uid, &0, BPF_NOEXIST);
            match INHERITED_UID.get_ptr_mut(&uid) {
                Some(p) => p,
                None => return false,
            }
        }
    };
    // SAFETY: map value pointers, valid for this program run; a racing add only makes the
    // value read stale by the adds in flight.
    let (n, u) = unsafe {
        (
            core::ptr::read_volatile(node),
            core::ptr::read_volatile(user),
        )
    };
    if n >= SCOPE_INHERITED_PER_NODE || u >= SCOPE_INHERITED_PER_UID {
        return false;
    }
    if INHERITED.insert(&child, &uid, BPF_NOEXIST).is_err() {
        // Full, or another CPU charged the same child first: either way nothing to add here.
        // SAFETY: value only read.
        return unsafe { INHERITED.get(&child) }.is_some();
    }
    add_count(user, 1);
    add_count(node, 1);
    true
}

/// Returns the charge of an inherited entry (its process exited, or the `SCOPE` insert failed):
/// exactly once, by whoever removes `tgid` from `INHERITED`. A user's count evicted meanwhile
/// (LRU) is not recreated; one recreated since may go below zero, which only lends that user
/// places the node's count still bounds.
#[inline(always)]
fn uncharge_inherited(tgid: u32) {
    // SAFETY: value copied out before the removal.
    let Some(uid) = (unsafe { INHERITED.get(&tgid) }).copied() else {
        return;
    };
    if INHERITED.remove(&tgid).is_err() {
        return;
    }
    if let Some(u) = INHERITED_UID.get_ptr_mut(&uid) {
        add_count(u, -1);
    }
    if let Some(n) = INHERITED_NODE.get_ptr_mut(0) {
        add_count(n, -1);
    }
}

/// A new process forked by a listed process is listed too (`CONFIG_SCOPE_INHERIT`): same name,
/// same cgroup, so the same verdict until it execs or userspace looks again. A new thread is
/// skipped (`CLONE_THREAD`: it shares its process's entry), so thread churn neither fills
/// `SCOPE` nor sends hints. The entry is charged to the parent's user: past its share
/// (`SCOPE_INHERITED_PER_UID`, and `SCOPE_INHERITED_PER_NODE` for all users) the child is not
/// listed (counted, `SCOPE_INHERIT_QUOTA`), so a user forking thousands of children cannot fill
/// `SCOPE` and keep the children of other users' listed processes out. When the child is
/// traced (it needs its own uprobes), or was refused its parent's listing (userspace decides
/// for it: in deny mode it is traced meanwhile), a discovery hint names it, rate-limited per parent, per
/// user and per node (refusals counted, `FORK_HINT_RATE_LIMITED`; a child without a hint is
/// found by the next rescan). Runs in the parent, as `copy_process` ends (the fork can no
/// longer fail, so the child will exit and `sched_process_exit` will return the charge).
#[tracepoint(category = "task", name = "task_newtask")]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let Some(cfg) = CONFIG.get(0) else {
        return 0;
    };
    let (flags, pid_off, flags_off) = (cfg.flags, cfg.newtask_pid_off, cfg.newtask_flags_off);
    if flags & CONFIG_SCOPE_INHERIT == 0 || pid_off == 0 || pid_off > 64 || flags_off > 64 {
        return 0;
    }
    // SAFETY: the offsets were read from this tracepoint's format file.
    let (Ok(child), Ok(clone_flags)) = (unsafe { ctx.read_at::<u32>(pid_off as usize) }, unsafe {
        ctx.read_at::<u64>(flags_off as usize)
    }) else {
        return 0;
    };
    if clone_flags & CLONE_THREAD != 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    let uid = bpf_get_current_uid_gid() as u32;
    // SAFETY: value only read.
    let listed = unsafe { SCOPE.get(&parent) }.is_some();
    let mut child_listed = listed;
    if listed {
        if !charge_inherited(child, uid) {
            count(counter::SCOPE_INHERIT_QUOTA);
            child_listed = false;
        } else if SCOPE.insert(&child, &1, 0).is_err() {
            count(counter::MAP_INSERT_FAILED);
            uncharge_inherited(child);
            child_listed = false;
        }
    }
    // A hint when the child is traced (it needs its own uprobes), and when it was refused the
    // parent's listing: userspace decides for it (in deny mode the child of an excluded process
    // is traced until then).
    let traced = child_listed == (flags & CONFIG_SCOPE_ALLOW != 0);
    if !traced && child_listed == listed {
        return 0;
    }
    if charge(&FORK_RATE, parent, 1, 1_000_000_000) >= HELLO_EVENTS_PER_SECOND
        || charge(&FORK_UID_RATE, uid, 1, 1_000_000_000) >= FORK_HINTS_PER_UID_SECOND
        || charge_node(NODE_FORK) >= FORK_HINTS_PER_NODE_SECOND
    {
        count(counter::FORK_HINT_RATE_LIMITED);
        return 0;
    }
    let mut ev = control(EVENT_EXEC_MAP, -1, 0);
    ev.hdr.tgid = child;
    ev.hdr.tid = child;
    if EVENTS.output::<ControlEvent>(&ev, 0).is_err() {
        count_lost();
    }
    0
}

/// A process's kernel state goes when its thread-group leader exits (`tid == tgid`; the exits
/// of other threads are skipped). Precisely: the tracepoint fires in `do_exit` of each thread,
/// so when the leader exits before the other threads (`pthread_exit` in `main`), the entries go
/// then, while the other threads still run under the same tgid: the `SCOPE` entry (in allow mode
/// the rest of the process is no longer traced, in deny mode an excluded one becomes traced,
/// until userspace looks again), the inherited charge (returned early: the entry it paid for is
/// gone too, so `SCOPE` holds no more than the charges), the rate windows (reset once: the
/// remaining threads never have `tid == tgid`), and userspace is told the process exited. An
/// exec from a non-leader thread makes the leader exit first the same way (`de_thread`), then
/// sends its exec hint, so userspace lists the process again when it is still selected. The
/// tgid cannot be reused before the last thread is gone and the leader reaped, so an early
/// removal never hits another process's entries. Recent kernels (6.18 has it, older ones do not)
/// give this tracepoint a `group_dead` field, true in the last thread's exit: removing on it
/// (offset read from the format file, as for `task_newtask`) would keep the entries until the
/// whole process is gone.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid != pid_tgid as u32 {
        return 0;
    }
    let traced = should_trace(tgid);
    let _ = SCOPE.remove(&tgid);
    uncharge_inherited(tgid);
    let _ = HELLO_RATE.remove(&tgid);
    let _ = FORK_RATE.remove(&tgid);
    let _ = SOCK_COUNT.remove(&tgid);
    let _ = DATA_RATE.remove(&tgid);
    let _ = CTRL_RATE.remove(&tgid);
    if !traced {
        return 0;
    }
    emit_control(EVENT_PROC_EXIT, -1, 0);
    0
}

// ---------------------------------------------------------------------------------------------
// OpenSSL
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn ssl_enter(ctx: &ProbeContext, op: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    if ssl == 0 {
        return 0;
    }
    let args = SslArgs {
        op,
        _pad: 0,
        ssl,
        buf: ctx.arg(1).unwrap_or(0),
        len_ptr: if op == OP_READ_EX || op == OP_WRITE_EX {
            ctx.arg(3).unwrap_or(0)
        } else {
            0
        },
        // SAFETY: no preconditions.
        ts: unsafe { bpf_ktime_get_ns() },
    };
    inserted(PENDING_SSL.insert(&pid_tgid, &args, 0));
    0
}

#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, OP_READ)
}
#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, OP_READ_EX)
}
#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, OP_WRITE)
}
#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, OP_WRITE_EX)
}

/// Return of any of the four calls: emits the bytes actually transferred.
#[uretprobe]
pub fn ssl_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: value copied out before removal.
    let Some(args) = (unsafe { PENDING_SSL.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = PENDING_SSL.remove(&pid_tgid);
    let ret: i64 = ctx.ret::<i32>() as i64;
    let n: u64 = if args.op == OP_READ_EX || args.op == OP_WRITE_EX {
        if ret == 1 && args.len_ptr != 0 {
            // SAFETY: user memory read through the helper.
            unsafe { bpf_probe_read_user(args.len_ptr as *const u64) }.unwrap_or(0)
        } else {
            0
        }
    } else if ret > 0 {
        ret as u64
    } else {
        0
    };
    if n == 0 {
        return 0;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let ck = mute_key(tgid, args.ssl);
    // SAFETY: value only read.
    if unsafe { MUTED.get(&ck) }.is_some() {
        return 0;
    }
    let write = args.op == OP_WRITE || args.op == OP_WRITE_EX;
    let mut meta = EmitMeta {
        tgid,
        tid: pid_tgid as u32,
        // Userspace knows the SSL object's socket from its `EVENT_SSL_FD` events.
        fd: -1,
        direction: if write { DIR_EGRESS } else { DIR_INGRESS },
        source: SRC_TLS,
        flags: 0,
        _pad: 0,
        conn_id: args.ssl,
        // SAFETY: no preconditions.
        ts: if write {
            args.ts
        } else {
            unsafe { bpf_ktime_get_ns() }
        },
        total: if n > u32::MAX as u64 {
            u32::MAX
        } else {
            n as u32
        },
        _pad2: 0,
    };
    let total = meta.total;
    emit_buf(&mut meta, args.buf, total);
    0
}

#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    if ssl == 0 {
        return 0;
    }
    if SSL_FDS.remove(&ssl_key(tgid, ssl)).is_ok() {
        count(counter::SSL_FDS_REMOVED);
    }
    let ck = mute_key(tgid, ssl);
    let _ = MUTED.remove(&ck);
    let _ = LOSSY.remove(&ck);
    emit_control(EVENT_SSL_FREE, -1, ssl);
    0
}

// ---------------------------------------------------------------------------------------------
// Go crypto/tls
// ---------------------------------------------------------------------------------------------
//
// Uprobes on `crypto/tls.(*Conn).Write` (entry) and `crypto/tls.(*Conn).Read` (entry, and each of
// its RET instructions: never a uretprobe, whose rewritten return address breaks Go's stack
// moves). Go >= 1.17's register ABI on x86-64: the receiver `*Conn` in RAX, `b []byte` in
// RBX (pointer) and RCX (length), the returned `n` in RAX, and the running goroutine `g` in
// R14. A goroutine blocked in `Read` may resume on another thread, and its thread meanwhile
// runs other goroutines: the pending read is keyed by (tgid, g), never by thread, and the
// thread-keyed `PENDING_SSL` is not used (its socket syscalls would be taken as ciphertext).
// The connection id is the `*Conn` pointer (8-byte aligned, like an `SSL*`).

/// Key of `GO_PENDING`: one goroutine of a process.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoKey {
    tgid: u32,
    _pad: u32,
    g: u64,
}

/// A `Read` in flight on one goroutine.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoRead {
    conn: u64,
    buf: u64,
    len: u64,
}

/// Reads in flight, by goroutine (a goroutine parked in `Read` for good keeps its entry until
/// the LRU evicts it).
#[map]
static GO_PENDING: LruHashMap<GoKey, GoRead> = LruHashMap::with_max_entries(16384, 0);
/// The socket generation last reported (`EVENT_SSL_FD`) for each `*Conn`: a `*Conn` address the
/// garbage collector reuses for a new connection on a reused fd is reported again.
#[map]
static GO_CONN_FDS: LruHashMap<SslKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Offset of `Sysfd` in `net.netFD` (`poll.FD{fdmu fdMutex (16 bytes), Sysfd int}`).
const GO_NETFD_SYSFD: u64 = 16;

/// The register-ABI arguments at a Go uprobe: (first word: receiver or result, second, third, g).
#[cfg(bpf_target_arch = "x86_64")]
#[inline(always)]
fn go_regs(ctx: &ProbeContext) -> (u64, u64, u64, u64) {
    // SAFETY: the kernel hands a valid pt_regs to the uprobe.
    let r = unsafe { &*ctx.regs };
    (r.rax, r.rbx, r.rcx, r.r14)
}

/// Other machines: no Go probes are attached (userspace refuses them), the programs do nothing.
#[cfg(not(bpf_target_arch = "x86_64"))]
#[inline(always)]
fn go_regs(_ctx: &ProbeContext) -> (u64, u64, u64, u64) {
    (0, 0, 0, 0)
}

/// Links a `*Conn` to its socket: `tls.Conn` starts with `conn net.Conn` (an interface: itab,
/// data); for a `*net.TCPConn` the data points at `net.conn{fd *netFD}`, whose `Sysfd` is the
/// fd. Trusted only when that fd is a socket of the process in `SOCKS`; the socket is then
/// marked TLS (its syscall bytes are ciphertext, never emitted), and the link sent once per
/// socket generation.
#[inline(always)]
fn go_link_fd(tgid: u32, conn: u64) {
    // SAFETY: user memory read through the helper, which faults safely.
    let Ok(data) = (unsafe { bpf_probe_read_user((conn + 8) as *const u64) }) else {
        return;
    };
    // SAFETY: as above.
    let Ok(netfd) = (unsafe { bpf_probe_read_user(data as *const u64) }) else {
        return;
    };
    // SAFETY: as above.
    let Ok(fd) = (unsafe { bpf_probe_read_user((netfd + GO_NETFD_SYSFD) as *const i64) }) else {
        return;
    };
    if !(0..=i32::MAX as i64).contains(&fd) {
        return;
    }
    let fd = fd as i32;
    let Some(sock) = SOCKS.get_ptr_mut(&SockKey { tgid, fd }) else {
        return;
    };
    // SAFETY: map value pointer valid for this program run.
    let sock = unsafe { &*sock };
    // Only a socket whose own bytes were a TLS record is linked: the pointer chain is the
    // process's memory (a `net.Conn` other than `*net.TCPConn` reads unrelated fields), and a
    // link that flagged a plaintext socket as TLS would hide its bytes. Before the handshake the
    // socket is not TLS yet: a later call links it.
    if sock.flags & SOCK_FLAG_TLS == 0 {
        return;
    }
    let generation = sock.generation;
    let key = ssl_key(tgid, conn);
    // SAFETY: value only read.
    let prev = unsafe { GO_CONN_FDS.get(&key) }.copied();
    if prev != Some(generation) {
        // One control event per link, within the process's control-event rate (a forged
        // `*Conn` per call cannot flood the ring or userspace's link table); refused, the link
        // is tried again on the next call.
        if !ctrl_allowed(tgid) {
            return;
        }
        // A `tls.Conn` never changes sockets: a new one means the garbage collector gave this
        // address to a new connection, which inherits neither a mute nor a loss mark (there is
        // no free to clear them, as `SSL_free` does).
        let ck = mute_key(tgid, conn);
        let _ = MUTED.remove(&ck);
        let _ = LOSSY.remove(&ck);
        inserted(GO_CONN_FDS.insert(&key, &generation, 0));
        emit_control(EVENT_SSL_FD, fd, conn);
    }
}

/// Emits `n` plaintext bytes at `buf` of connection `conn`.
#[inline(always)]
fn go_emit(pid_tgid: u64, conn: u64, buf: u64, n: u64, direction: u8) {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: value only read.
    if unsafe { MUTED.get(&mute_key(tgid, conn)) }.is_some() {
        return;
    }
    let mut meta = EmitMeta {
        tgid,
        tid: pid_tgid as u32,
        fd: -1,
        direction,
        source: SRC_TLS,
        flags: 0,
        _pad: 0,
        conn_id: conn,
        // SAFETY: no preconditions.
        ts: unsafe { bpf_ktime_get_ns() },
        total: if n > u32::MAX as u64 {
            u32::MAX
        } else {
            n as u32
        },
        _pad2: 0,
    };
    let total = meta.total;
    emit_buf(&mut meta, buf, total);
}

/// Entry of `crypto/tls.(*Conn).Write(b)`: the plaintext is in `b`, stamped now.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return 0;
    }
    let (conn, buf, len, _g) = go_regs(&ctx);
    let n = len as i64;
    if conn == 0 || buf == 0 || n <= 0 {
        return 0;
    }
    go_link_fd(tgid, conn);
    go_emit(pid_tgid, conn, buf, n as u64, DIR_EGRESS);
    0
}

/// Entry of `crypto/tls.(*Conn).Read(b)`: saves the buffer for the goroutine's RET.
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return 0;
    }
    let (conn, buf, len, g) = go_regs(&ctx);
    if conn == 0 || buf == 0 || g == 0 {
        return 0;
    }
    let key = GoKey { tgid, _pad: 0, g };
    inserted(GO_PENDING.insert(&key, &GoRead { conn, buf, len }, 0));
    0
}

/// A RET of `crypto/tls.(*Conn).Read`: `n` bytes arrived in the buffer saved at entry.
#[uprobe]
pub fn go_tls_read_ret(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !should_trace(tgid) {
        return 0;
    }
    let (ret, _, _, g) = go_regs(&ctx);
    let key = GoKey { tgid, _pad: 0, g };
    // SAFETY: value copied out before removal.
    let Some(args) = (unsafe { GO_PENDING.get(&key) }).copied() else {
        return 0;
    };
    let _ = GO_PENDING.remove(&key);
    let n = ret as i64;
    if n <= 0 || n as u64 > args.len {
        return 0;
    }
    go_link_fd(tgid, args.conn);
    go_emit(pid_tgid, args.conn, args.buf, n as u64, DIR_INGRESS);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
