//! The kernel/user ABI of llmprobe: every type that crosses the ring buffer or lives in a
//! shared BPF map. All types are `#[repr(C)]`, padded explicitly, and size-checked at compile
//! time, so the eBPF object and the agent agree byte for byte.
#![no_std]

/// Payload bytes carried by one [`DataEvent`]. A larger buffer is split into several events.
pub const MAX_DATA: usize = 16 * 1024;
/// Most data events one syscall or SSL call may produce (`MAX_CHUNKS * MAX_DATA` bytes);
/// beyond that the rest is reported as a gap (`total_len` > bytes emitted).
pub const MAX_CHUNKS: u32 = 8;
/// Most iovec entries walked per `writev`/`readv`/`sendmsg`/`recvmsg`.
pub const MAX_IOV: u32 = 8;
/// Length of a task's comm.
pub const COMM_LEN: usize = 16;

/// [`EventHeader::kind`]: a [`DataEvent`] with payload bytes.
pub const EVENT_DATA: u32 = 1;
/// A [`ConnEvent`]: a socket was connected or accepted (`fd`, `conn_id` = generation).
pub const EVENT_CONN_OPEN: u32 = 2;
/// A [`ConnEvent`]: a tracked socket was closed (`fd`, `conn_id` = generation).
pub const EVENT_CONN_CLOSE: u32 = 3;
/// A [`ConnEvent`]: an SSL object (`conn_id`) was seen doing I/O on socket `fd`.
pub const EVENT_SSL_FD: u32 = 4;
/// A [`ConnEvent`]: `SSL_free` on `conn_id`; the TLS connection is over.
pub const EVENT_SSL_FREE: u32 = 5;
/// A [`ConnEvent`]: the process exec'd or mapped an executable file; its maps may hold a new TLS library.
pub const EVENT_EXEC_MAP: u32 = 6;
/// A [`ConnEvent`]: the thread-group leader exited.
pub const EVENT_PROC_EXIT: u32 = 7;

/// [`DataEvent::direction`]: bytes the observed process wrote/sent.
pub const DIR_EGRESS: u8 = 0;
/// [`DataEvent::direction`]: bytes the observed process read/received.
pub const DIR_INGRESS: u8 = 1;

/// [`DataEvent::source`]: plaintext socket syscall; `conn_id` is the socket generation.
pub const SRC_SOCKET: u8 = 0;
/// [`DataEvent::source`]: OpenSSL call; `conn_id` is the `SSL*` pointer.
pub const SRC_TLS: u8 = 1;

/// [`DataEvent::flags`]: records of this connection were lost (ring buffer full) before this one,
/// so whatever userspace knew about the stream's position (e.g. inside a header line) is stale.
pub const DATA_FLAG_LOST_BEFORE: u8 = 1;

/// [`ConnEvent::role_hint`] values.
pub const ROLE_HINT_UNKNOWN: u8 = 0;
/// The socket came from `connect`.
pub const ROLE_HINT_CONNECT: u8 = 1;
/// The socket came from `accept`/`accept4`.
pub const ROLE_HINT_ACCEPT: u8 = 2;
/// The socket existed before the agent started (seeded from /proc).
pub const ROLE_HINT_SEEDED: u8 = 3;

/// [`SockInfo::flags`]: the socket carries TLS records; its syscall payload is never emitted.
pub const SOCK_FLAG_TLS: u32 = 1;
/// [`SockInfo::flags`]: the first payload has been looked at.
pub const SOCK_FLAG_SEEN_DATA: u32 = 2;

/// [`Config::flags`]: only processes in the `PIDS` map are traced.
pub const CONFIG_FILTER_PIDS: u32 = 1;

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// One of the `EVENT_*` constants.
    pub kind: u32,
    /// Process id (thread-group id).
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Socket file descriptor, or -1 when unknown (e.g. TLS over a memory BIO).
    pub fd: i32,
    /// Connection id: the `SSL*` pointer for TLS, the socket generation for plaintext.
    pub conn_id: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the bytes moved: entry of a write, return of a read.
    pub ts_ns: u64,
    /// The thread's comm (NUL-padded).
    pub comm: [u8; COMM_LEN],
}

/// Payload captured from a socket syscall or an SSL call, reserved straight in the ring buffer
/// (no per-CPU scratch buffer, which a preempted program could share with another). A record
/// carries at most `N` payload bytes; the kernel picks the smallest of [`DATA_CLASS_SMALL`],
/// [`DATA_CLASS_MEDIUM`] and [`MAX_DATA`] that fits, so a small write takes a small slot.
/// `len` says how many of the `N` bytes are valid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEventOf<const N: usize> {
    /// Common header (`kind` = [`EVENT_DATA`]).
    pub hdr: EventHeader,
    /// [`DIR_EGRESS`] or [`DIR_INGRESS`].
    pub direction: u8,
    /// [`SRC_SOCKET`] or [`SRC_TLS`].
    pub source: u8,
    /// `DATA_FLAG_*` bits.
    pub flags: u8,
    /// Reserved, zero.
    pub _pad: u8,
    /// Bytes valid in `data`.
    pub len: u32,
    /// Offset of `data` within the call's whole transfer.
    pub offset: u32,
    /// Bytes the call transferred in all (may exceed what was emitted: the rest is a gap).
    pub total_len: u32,
    /// Payload.
    pub data: [u8; N],
}

/// A data record of the largest class.
pub type DataEvent = DataEventOf<MAX_DATA>;
/// Payload bytes of the smallest data record class.
pub const DATA_CLASS_SMALL: usize = 512;
/// Payload bytes of the middle data record class.
pub const DATA_CLASS_MEDIUM: usize = 4096;

/// Size of a [`DataEvent`] without its payload.
pub const DATA_HEADER_SIZE: usize = core::mem::size_of::<DataEvent>() - MAX_DATA;

/// Connection lifecycle and discovery events.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    /// Common header.
    pub hdr: EventHeader,
    /// Peer address family: `AF_INET` (2), `AF_INET6` (10), or 0 when unknown.
    pub family: u16,
    /// Peer port, host byte order.
    pub port: u16,
    /// One of the `ROLE_HINT_*` constants.
    pub role_hint: u8,
    /// Reserved, zero.
    pub _pad: [u8; 3],
    /// Peer address (first 4 bytes for IPv4), network byte order.
    pub addr: [u8; 16],
}

/// Key of the `SOCKS` map: a socket file descriptor in a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SockKey {
    /// Process id.
    pub tgid: u32,
    /// File descriptor.
    pub fd: i32,
}

/// Value of the `SOCKS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockInfo {
    /// Generation: unique per socket lifetime, so fd reuse after close is a new connection.
    pub generation: u64,
    /// `SOCK_FLAG_*` bits.
    pub flags: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

/// Key of the `MUTED` and `SSL_FDS` maps: one connection of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Process id.
    pub tgid: u32,
    /// Reserved, zero.
    pub _pad: u32,
    /// `SSL*` pointer or socket generation.
    pub conn_id: u64,
}

/// A per-process rate window (`CTRL_RATE`, `DATA_RATE` maps, keyed by tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RateWindow {
    /// Start of the current window (`bpf_ktime_get_ns`).
    pub start_ns: u64,
    /// Events or bytes counted in the current window.
    pub used: u64,
}

/// Indices of the kernel's `COUNTERS` per-CPU array: things the kernel side refused or lost.
pub mod counter {
    /// A data call dropped: the ring buffer was under pressure and the process had used more
    /// than its share of it in the current window.
    pub const FAIR_SHARE: u32 = 0;
    /// An exec/mmap discovery hint dropped: the process sent too many in the current window.
    pub const CTRL_RATE_LIMITED: u32 = 1;
    /// A socket not tracked: its process already has `MAX_SOCKS_PER_PROCESS` tracked sockets.
    pub const SOCKS_PER_PROCESS: u32 = 2;
    /// An insert into a kernel map failed (other than a full LRU map, which evicts).
    pub const MAP_INSERT_FAILED: u32 = 3;
    /// New entries inserted into `SOCKS` (with the removals and the map's size, userspace
    /// derives how many the LRU evicted).
    pub const SOCKS_INSERTED: u32 = 4;
    /// Entries removed from `SOCKS` by a close.
    pub const SOCKS_REMOVED: u32 = 5;
    /// New entries inserted into `SSL_FDS`.
    pub const SSL_FDS_INSERTED: u32 = 6;
    /// Entries removed from `SSL_FDS` by `SSL_free`.
    pub const SSL_FDS_REMOVED: u32 = 7;
    /// Number of counters.
    pub const COUNT: u32 = 8;
}

/// Ring-buffer bytes (`SIZE_RING`) a process may fill per `FAIR_WINDOW_NS` while the ring is
/// under pressure (more than half full).
pub const FAIR_SHARE_BYTES: u64 = 2 * 1024 * 1024;
/// Window of the per-process fair share and of the discovery-hint rate limit.
pub const FAIR_WINDOW_NS: u64 = 100_000_000;
/// Size of the ring buffer.
pub const RING_BYTES: u32 = 16 * 1024 * 1024;
/// Exec/mmap discovery hints one process may send per second.
pub const CTRL_EVENTS_PER_SECOND: u64 = 32;
/// Sockets of one process tracked in the kernel at once.
pub const MAX_SOCKS_PER_PROCESS: u32 = 8192;

/// Agent settings read by the kernel programs (`CONFIG` array, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// The agent's own pid: never traced.
    pub self_tgid: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 48);
const _: () = assert!(DATA_HEADER_SIZE == 64);
const _: () = assert!(core::mem::size_of::<DataEventOf<DATA_CLASS_SMALL>>() == 64 + DATA_CLASS_SMALL);
const _: () =
    assert!(core::mem::size_of::<DataEventOf<DATA_CLASS_MEDIUM>>() == 64 + DATA_CLASS_MEDIUM);
const _: () = assert!(core::mem::size_of::<RateWindow>() == 16);
const _: () = assert!(core::mem::size_of::<ConnEvent>() == 72);
const _: () = assert!(core::mem::size_of::<SockKey>() == 8);
const _: () = assert!(core::mem::size_of::<SockInfo>() == 16);
const _: () = assert!(core::mem::size_of::<ConnKey>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 8);

/// Socket generations get the low bit set; `SSL*` pointers are at least 8-byte aligned, so the
/// two id spaces never collide.
pub const GENERATION_TAG: u64 = 1;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, `#[repr(C)]`, explicitly padded, no pointers or invariants.
    unsafe impl aya::Pod for SockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SockInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RateWindow {}
}
