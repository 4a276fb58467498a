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

/// [`EventHeader::kind`] of a data record ([`DataEventOf`]): payload bytes of one call.
pub const EVENT_DATA: u32 = 1;
/// A [`ConnOpenEvent`]: a socket was connected or accepted (`fd`, `conn_id` = generation).
pub const EVENT_CONN_OPEN: u32 = 2;
/// A [`ControlEvent`]: a tracked socket was closed (`fd`, `conn_id` = generation).
pub const EVENT_CONN_CLOSE: u32 = 3;
/// A [`ControlEvent`]: an SSL object (`conn_id`) was seen doing I/O on socket `fd`.
pub const EVENT_SSL_FD: u32 = 4;
/// A [`ControlEvent`]: `SSL_free` on `conn_id`; the TLS connection is over.
pub const EVENT_SSL_FREE: u32 = 5;
/// A [`ControlEvent`]: the process exec'd (`fd` = -1) or mapped an executable file (`fd`); its
/// maps may hold a new TLS library.
pub const EVENT_EXEC_MAP: u32 = 6;
/// A [`ControlEvent`]: the thread-group leader exited.
pub const EVENT_PROC_EXIT: u32 = 7;
/// A [`TlsHelloEvent`] (`--scope auto` only): the first bytes of a socket's first TLS handshake
/// record written by the process (a client's ClientHello), once per socket, so userspace can
/// read the server name and decide whether to probe the process. A server's reads send none: a
/// client naming an LLM host must not get the server it talks to probed.
pub const EVENT_TLS_HELLO: u32 = 8;
/// A [`ControlEvent`]: a tracked socket's first bytes were a TLS record the process wrote (a
/// client's ClientHello; `fd`, `conn_id` = the socket's generation, `ts_ns` = the write's entry),
/// or its first write happened inside an SSL call (the handshake ran inside the first
/// `SSL_write`). Sent once per socket, never with payload, whatever the scope mode: with the
/// connect's entry time ([`ConnOpenEvent::start_ns`]) and the first request byte it splits a
/// fresh connection's time into connect and TLS handshake. A server's reads send none.
pub const EVENT_TLS_START: u32 = 9;

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

/// [`SockInfo::flags`]: the socket carries TLS records; its syscall payload is never emitted.
pub const SOCK_FLAG_TLS: u32 = 1;
/// [`SockInfo::flags`]: the first payload has been looked at.
pub const SOCK_FLAG_SEEN_DATA: u32 = 2;

/// [`Config::flags`]: only processes listed in the `SCOPE` map are traced (an include selector).
pub const CONFIG_SCOPE_ALLOW: u32 = 1;
/// [`Config::flags`]: processes listed in the `SCOPE` map are not traced (exclude selectors only).
pub const CONFIG_SCOPE_DENY: u32 = 2;
/// [`Config::flags`]: the selection is inherited (by name, cgroup or container): a forked child
/// process of a listed process is listed too (`task_newtask`; new threads are not: they share
/// their process's entry), every exec sends a discovery hint (the new program may enter or leave
/// the selection), and a fork that yields a traced process sends one for the child (it needs its
/// own uprobes).
pub const CONFIG_SCOPE_INHERIT: u32 = 4;
/// [`Config::flags`]: send an [`EVENT_TLS_HELLO`] for each traced socket's first TLS handshake
/// record (`--scope auto`).
pub const CONFIG_TLS_HELLO: u32 = 8;
/// Entries of the `SCOPE` map (tgids); a failed insert is counted (`MAP_INSERT_FAILED`).
pub const SCOPE_MAP_ENTRIES: u32 = 16384;
/// Bytes of a TLS handshake record sent in an [`EVENT_TLS_HELLO`] (a ClientHello's server name
/// comes early: it fits unless the client sends a very long session ticket or cipher list).
pub const TLS_HELLO_BYTES: usize = 512;
/// TLS hello records one process may send per second, and fork hints one process may cause.
pub const HELLO_EVENTS_PER_SECOND: u64 = 32;
/// TLS hello records the processes of one user id may send per second (a user cannot crowd out
/// the others' hellos: past this its hellos are dropped and counted, `HELLO_RATE_LIMITED`).
pub const HELLO_EVENTS_PER_UID_SECOND: u64 = 64;
/// TLS hello records all processes together may send per second; each wakes the reader at once
/// (a hello's process is probed before its first `SSL_write`), and past this none is sent.
pub const HELLO_EVENTS_PER_NODE_SECOND: u64 = 1024;
/// Fork hints (a traced process's new child named to userspace) the processes of one user id
/// may cause per second: `HELLO_EVENTS_PER_SECOND` per parent alone would let a user multiply
/// hints by its number of parents. Past this they are dropped and counted
/// (`FORK_HINT_RATE_LIMITED`); the child is then found by the next rescan.
pub const FORK_HINTS_PER_UID_SECOND: u64 = 64;
/// Fork hints all processes together may cause per second.
pub const FORK_HINTS_PER_NODE_SECOND: u64 = 1024;
/// `SCOPE` entries the kernel may hold at once for children inherited (`CONFIG_SCOPE_INHERIT`)
/// from the listed processes of one user id (the forking parent's uid): a sixteenth of the map.
/// An in-scope user forking thousands of children takes at most this many places; past it a
/// child is not inherited (counted, `SCOPE_INHERIT_QUOTA`) and waits for userspace's verdict.
/// A quarter would let four users fill the map; a sixteenth still leaves 1024 live inherited
/// children per user (a pre-fork server or a shell needs far fewer), and with
/// `SCOPE_INHERITED_PER_NODE` no number of users takes more than half the map.
pub const SCOPE_INHERITED_PER_UID: i64 = SCOPE_MAP_ENTRIES as i64 / 16;
/// `SCOPE` entries the kernel may hold at once for inherited children of all users together:
/// half the map, so the other half always stays for the processes userspace lists itself (a
/// user with many ids, e.g. a subordinate uid range, cannot fill the map by forking).
pub const SCOPE_INHERITED_PER_NODE: i64 = SCOPE_MAP_ENTRIES as i64 / 2;

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
    /// Socket file descriptor, or -1 when unknown. TLS data records always carry -1: userspace
    /// knows each `SSL*`'s socket from the [`EVENT_SSL_FD`] events.
    pub fd: i32,
    /// Connection id: the `SSL*` pointer for TLS, the socket generation for plaintext.
    pub conn_id: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the bytes moved: entry of a write, return of a read.
    pub ts_ns: u64,
}

/// The fixed part of a data record: what one call's bytes are and where they sit in the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataHeader {
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
    /// Bytes valid in the payload.
    pub len: u32,
    /// Offset of the payload within the call's whole transfer.
    pub offset: u32,
    /// Bytes the call transferred in all (may exceed what was emitted: the rest is a gap).
    pub total_len: u32,
}

/// Payload captured from a socket syscall or an SSL call, reserved straight in the ring buffer
/// (no per-CPU scratch buffer, which a preempted program could share with another). A record
/// carries at most `N` payload bytes; the kernel picks the smallest of [`DATA_CLASS_SMALL`],
/// [`DATA_CLASS_MEDIUM`] and [`MAX_DATA`] that fits, so a small write takes a small slot.
/// `head.len` says how many of the `N` bytes are valid. A data record carries no comm: userspace
/// names processes from /proc and from the control events, which do carry it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEventOf<const N: usize> {
    /// What the payload is.
    pub head: DataHeader,
    /// Payload.
    pub data: [u8; N],
}

/// A data record of the largest class.
pub type DataEvent = DataEventOf<MAX_DATA>;
/// Payload bytes of the smallest data record class.
pub const DATA_CLASS_SMALL: usize = 512;
/// Payload bytes of the middle data record class.
pub const DATA_CLASS_MEDIUM: usize = 4096;

/// Size of a data record without its payload.
pub const DATA_HEADER_SIZE: usize = core::mem::size_of::<DataHeader>();

/// A control record: connection close, SSL->fd link, `SSL_free`, exec/mmap hint, process exit,
/// first TLS record written (`EVENT_CONN_CLOSE`, `EVENT_SSL_FD`, `EVENT_SSL_FREE`,
/// `EVENT_EXEC_MAP`, `EVENT_PROC_EXIT`, `EVENT_TLS_START`):
/// the header says it all. Also the prefix of a [`ConnOpenEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ControlEvent {
    /// Common header.
    pub hdr: EventHeader,
    /// The thread's comm (NUL-padded); userspace's fallback name for a process whose /proc
    /// entry is already gone.
    pub comm: [u8; COMM_LEN],
}

/// [`ConnOpenEvent::family`] of an IPv4 peer (`AF_INET`).
pub const AF_INET: u16 = 2;
/// [`ConnOpenEvent::family`] of an IPv6 peer (`AF_INET6`).
pub const AF_INET6: u16 = 10;

/// [`ConnOpenEvent::flags`]: the process connected the socket (`connect`).
pub const OPEN_FLAG_CONNECT: u32 = 1;
/// [`ConnOpenEvent::flags`]: the process accepted the socket (`accept`, `accept4`).
pub const OPEN_FLAG_ACCEPT: u32 = 2;

/// A socket was connected or accepted ([`EVENT_CONN_OPEN`]), with its peer. The header's
/// `ts_ns` is the syscall's return; `start_ns` its entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnOpenEvent {
    /// Header and comm.
    pub ctl: ControlEvent,
    /// Peer address family: [`AF_INET`], [`AF_INET6`], or 0 when unknown.
    pub family: u16,
    /// Peer port, host byte order.
    pub port: u16,
    /// `OPEN_FLAG_*`: which syscall opened the socket.
    pub flags: u32,
    /// Peer address (first 4 bytes for IPv4), network byte order.
    pub addr: [u8; 16],
    /// `bpf_ktime_get_ns()` at the syscall's entry (for a connect: when the client started
    /// connecting; a non-blocking connect returns at once, so its return says nothing).
    pub start_ns: u64,
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

/// Key of the `MUTED` and `LOSSY` maps: one connection of a process, TLS or plaintext.
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

/// Key of the `SSL_FDS` map (value: the socket fd last seen under the SSL object).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SslKey {
    /// Process id.
    pub tgid: u32,
    /// Reserved, zero.
    pub _pad: u32,
    /// The `SSL*` pointer.
    pub ssl: u64,
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
    /// A TLS hello record not sent (`--scope auto`): its process, its user or the node had
    /// sent their share in the current second.
    pub const HELLO_RATE_LIMITED: u32 = 8;
    /// A forked child of a listed process not listed by the kernel: its user
    /// (`SCOPE_INHERITED_PER_UID`) or the node (`SCOPE_INHERITED_PER_NODE`) already holds its
    /// share of inherited `SCOPE` entries.
    pub const SCOPE_INHERIT_QUOTA: u32 = 9;
    /// A fork hint not sent: its parent process, its user or the node had sent their share in
    /// the current second.
    pub const FORK_HINT_RATE_LIMITED: u32 = 10;
    /// Number of counters.
    pub const COUNT: u32 = 11;
}

/// Ring-buffer bytes (`SIZE_RING`) a process may fill per `FAIR_WINDOW_NS` while the ring is
/// under pressure (more than half full).
pub const FAIR_SHARE_BYTES: u64 = 2 * 1024 * 1024;
/// Window of the per-process fair share and of the discovery-hint rate limit.
pub const FAIR_WINDOW_NS: u64 = 100_000_000;
/// Default size of the ring buffer (`--ring-buffer-size`).
pub const RING_BYTES: u32 = 16 * 1024 * 1024;
/// Smallest ring buffer userspace accepts: four times `RING_WAKE_BYTES`, so a wakeup comes
/// well before the ring fills.
pub const RING_BYTES_MIN: u32 = 1024 * 1024;
/// Largest ring buffer userspace accepts.
pub const RING_BYTES_MAX: u32 = 1024 * 1024 * 1024;
/// Bytes waiting in the ring past which the kernel wakes the reader at once; below it the reader
/// drains every `RING_DRAIN_EVERY_MS` (records are stamped in the kernel: the wait changes no time).
pub const RING_WAKE_BYTES: u32 = 256 * 1024;
/// How often the reader drains the ring when the kernel has not woken it.
pub const RING_DRAIN_EVERY_MS: u64 = 20;
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
    /// Offset of `pid` in the `task:task_newtask` record (read from its format file); 0 when
    /// unknown (no fork inheritance).
    pub newtask_pid_off: u32,
    /// Offset of `clone_flags` (8 bytes) in the `task:task_newtask` record; 0 when unknown.
    pub newtask_flags_off: u32,
}

/// The first bytes of a socket's first TLS handshake record ([`EVENT_TLS_HELLO`]).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsHelloEvent {
    /// Common header (`fd`, `conn_id` = the socket's generation).
    pub hdr: EventHeader,
    /// Bytes valid in `data`.
    pub len: u32,
    /// [`DIR_EGRESS`]: only a client's hello (the process wrote it) is sent.
    pub direction: u32,
    /// The record's first bytes.
    pub data: [u8; TLS_HELLO_BYTES],
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 32);
const _: () = assert!(DATA_HEADER_SIZE == 48);
const _: () = assert!(core::mem::offset_of!(DataEventOf<MAX_DATA>, data) == DATA_HEADER_SIZE);
const _: () =
    assert!(core::mem::size_of::<DataEventOf<DATA_CLASS_SMALL>>() == 48 + DATA_CLASS_SMALL);
const _: () =
    assert!(core::mem::size_of::<DataEventOf<DATA_CLASS_MEDIUM>>() == 48 + DATA_CLASS_MEDIUM);
const _: () = assert!(core::mem::size_of::<DataEvent>() == 48 + MAX_DATA);
const _: () = assert!(core::mem::size_of::<ControlEvent>() == 48);
const _: () = assert!(core::mem::size_of::<ConnOpenEvent>() == 80);
const _: () = assert!(core::mem::size_of::<RateWindow>() == 16);
const _: () = assert!(core::mem::size_of::<SockKey>() == 8);
const _: () = assert!(core::mem::size_of::<SockInfo>() == 16);
const _: () = assert!(core::mem::size_of::<ConnKey>() == 16);
const _: () = assert!(core::mem::size_of::<SslKey>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 16);
const _: () = assert!(core::mem::size_of::<TlsHelloEvent>() == 40 + TLS_HELLO_BYTES);
// Inherited entries never take the whole `SCOPE` map, and one user never the node's share.
const _: () = assert!(
    0 < SCOPE_INHERITED_PER_UID
        && SCOPE_INHERITED_PER_UID <= SCOPE_INHERITED_PER_NODE
        && SCOPE_INHERITED_PER_NODE < SCOPE_MAP_ENTRIES as i64
);

/// A ring-buffer record type that can be read back from the bytes the kernel wrote: every bit
/// pattern is a valid value (integers and byte arrays only, padding explicit).
///
/// # Safety
/// Implement only for `#[repr(C)]` types made of integers and arrays of integers, with no
/// implicit padding (checked by the size asserts above).
pub unsafe trait Record: Copy {
    /// Reads the record at the start of `raw`: `None` when `raw` is shorter than `Self`. Bytes
    /// past the record (a data record's payload) are left to the caller. Never panics, whatever
    /// the bytes and their alignment.
    fn read_from(raw: &[u8]) -> Option<Self> {
        if raw.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: `raw` holds at least `size_of::<Self>()` bytes; `read_unaligned` needs no
        // alignment; every bit pattern is a valid `Self` (the trait's contract).
        Some(unsafe { core::ptr::read_unaligned(raw.as_ptr().cast::<Self>()) })
    }

    /// The record's bytes, as the kernel writes them (tests and fuzz seeds build records so).
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self` has no implicit padding (the trait's contract), so all
        // `size_of::<Self>()` bytes behind `self` are initialised and live as long as `self`.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }
}

// SAFETY: integers only, no implicit padding (size asserted).
unsafe impl Record for EventHeader {}
// SAFETY: integers and an explicit pad byte, no implicit padding (size asserted).
unsafe impl Record for DataHeader {}
// SAFETY: a header and a byte array, no implicit padding (size asserted).
unsafe impl Record for ControlEvent {}
// SAFETY: integers, byte arrays and an explicit pad, no implicit padding (size asserted).
unsafe impl Record for ConnOpenEvent {}
// SAFETY: a header, integers and a byte array, no implicit padding (size asserted).
unsafe impl Record for TlsHelloEvent {}

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
    unsafe impl aya::Pod for SslKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RateWindow {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_from_short_and_unaligned_bytes() {
        let mut raw = [0u8; 1 + DATA_HEADER_SIZE + 3];
        // kind at the unaligned offset 1.
        raw[1..5].copy_from_slice(&EVENT_DATA.to_ne_bytes());
        raw[1 + 36..1 + 40].copy_from_slice(&3u32.to_ne_bytes());
        let h = DataHeader::read_from(&raw[1..]).expect("long enough");
        assert_eq!((h.hdr.kind, h.len), (EVENT_DATA, 3));
        for n in 0..DATA_HEADER_SIZE {
            assert!(DataHeader::read_from(&raw[1..1 + n]).is_none(), "{n} bytes");
        }
        assert!(ControlEvent::read_from(&raw[..47]).is_none());
        assert!(ControlEvent::read_from(&raw[..48]).is_some());
        assert!(ConnOpenEvent::read_from(&raw).is_none());
        let h = DataHeader::read_from(&raw[1..]).expect("long enough");
        assert_eq!(h.as_bytes(), &raw[1..1 + DATA_HEADER_SIZE]);
    }

    #[test]
    fn field_offsets() {
        assert_eq!(core::mem::offset_of!(DataHeader, len), 36);
        assert_eq!(core::mem::offset_of!(ControlEvent, comm), 32);
        assert_eq!(core::mem::offset_of!(ConnOpenEvent, family), 48);
        assert_eq!(core::mem::offset_of!(ConnOpenEvent, addr), 56);
        assert_eq!(core::mem::offset_of!(ConnOpenEvent, start_ns), 72);
    }
}
