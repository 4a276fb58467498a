//! Probe events as the rest of the agent sees them: decoded from the ring buffer's `#[repr(C)]`
//! records (see `llmprobe-common`), and serialisable for `record`/`replay`.
//!
//! Decoding reads each record through its `llmprobe_common::Record` type (an unaligned copy
//! after a length check), never at hand-written offsets: a short or unknown record is a
//! `DecodeError`, counted by the reader, never a panic. Data records carry no comm (the
//! `EventPreparer` names the process) and TLS data records no fd (it fills in the socket last
//! reported by `SslFd`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use llmprobe_common::{self as abi, Record as _};
use serde::{Deserialize, Serialize};

/// Which way bytes moved, from the observed process's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Written / sent by the process.
    Egress,
    /// Read / received by the process.
    Ingress,
}

impl Direction {
    /// The other direction.
    pub fn opposite(self) -> Self {
        match self {
            Direction::Egress => Direction::Ingress,
            Direction::Ingress => Direction::Egress,
        }
    }
}

/// Fields every event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Socket fd, -1 when unknown.
    pub fd: i32,
    /// `SSL*` pointer (TLS) or socket generation (plaintext).
    pub conn_id: u64,
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Thread name (the process name once prepared).
    pub comm: String,
    /// Container id from the process's cgroup, when it runs in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Bytes moved by one syscall or SSL call (or a piece of a large one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataChunk {
    /// Common fields.
    pub meta: EventMeta,
    /// Direction.
    pub direction: Direction,
    /// Captured from an SSL call (plaintext of a TLS connection).
    pub tls: bool,
    /// Offset of `data` within the call's transfer.
    pub offset: u32,
    /// Bytes the call moved in all.
    pub total_len: u32,
    /// Records of this connection were lost (ring buffer full) before this one
    /// (`DATA_FLAG_LOST_BEFORE`): whatever state a consumer kept for the stream is stale. The
    /// secret masker fails closed on it.
    pub lost_before: bool,
    /// The bytes (secrets already masked, see `probes::scrub`).
    pub data: Bytes,
    /// Set by the masker (`probes::scrub`): the keyed fingerprint of an API credential whose
    /// value ended in this chunk (the credential itself never leaves the masker). None from the
    /// kernel and from captures.
    pub api_key_id: Option<u64>,
    /// Set by the masker: the keyed id of an `Mcp-Session-Id` header whose value ended in this
    /// chunk (the id itself never leaves the masker). None from the kernel.
    pub mcp_session_id: Option<u64>,
}

/// Everything the kernel side reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// Payload.
    Data(DataChunk),
    /// A socket was connected, accepted, or found at start.
    ConnOpen {
        /// Common fields (`conn_id` = generation).
        meta: EventMeta,
        /// Peer address, when known.
        peer: Option<SocketAddr>,
        /// For a socket the process connected: when its `connect()` started (monotonic ns).
        /// None for an accepted or seeded socket, and in older captures.
        connect_ns: Option<u64>,
    },
    /// The process wrote the first TLS record (its ClientHello) on a tracked socket (`fd`,
    /// `conn_id` = generation, `ts_ns` = the write's start). Once per socket.
    TlsStart {
        /// Common fields.
        meta: EventMeta,
    },
    /// A tracked socket was closed.
    ConnClose {
        /// Common fields (`conn_id` = generation).
        meta: EventMeta,
    },
    /// An SSL object (`conn_id`) does I/O on socket `fd`.
    SslFd {
        /// Common fields.
        meta: EventMeta,
    },
    /// `SSL_free`.
    SslFree {
        /// Common fields.
        meta: EventMeta,
    },
    /// The process exec'd or mapped an executable file.
    ExecMap {
        /// Common fields.
        meta: EventMeta,
    },
    /// The process exited.
    ProcExit {
        /// Common fields.
        meta: EventMeta,
    },
}

impl ProbeEvent {
    /// The common fields.
    pub fn meta(&self) -> &EventMeta {
        match self {
            ProbeEvent::Data(d) => &d.meta,
            ProbeEvent::ConnOpen { meta, .. }
            | ProbeEvent::ConnClose { meta }
            | ProbeEvent::TlsStart { meta }
            | ProbeEvent::SslFd { meta }
            | ProbeEvent::SslFree { meta }
            | ProbeEvent::ExecMap { meta }
            | ProbeEvent::ProcExit { meta } => meta,
        }
    }
}

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header says.
    Truncated,
    /// Unknown `kind`.
    UnknownKind(u32),
}

/// Turns a comm byte array into a string (up to the first NUL).
pub fn comm_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn meta_of(h: &abi::EventHeader, comm: String) -> EventMeta {
    EventMeta {
        pid: h.tgid,
        tid: h.tid,
        fd: h.fd,
        conn_id: h.conn_id,
        ts_ns: h.ts_ns,
        comm,
        container: None,
    }
}

/// The peer of a [`abi::ConnOpenEvent`], when its family is IP.
fn peer_of(ev: &abi::ConnOpenEvent) -> Option<SocketAddr> {
    let ip = match ev.family {
        abi::AF_INET => IpAddr::V4(Ipv4Addr::new(
            ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
        )),
        abi::AF_INET6 => IpAddr::V6(Ipv6Addr::from(ev.addr)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, ev.port))
}

/// Decodes one ring-buffer record through the `#[repr(C)]` types of `llmprobe-common`. A record
/// shorter than its kind's type (or than the payload length it states) is `Truncated`; bytes
/// past the record are ignored (the ring rounds records up to 8 bytes).
pub fn decode(raw: &[u8]) -> Result<ProbeEvent, DecodeError> {
    let hdr = abi::EventHeader::read_from(raw).ok_or(DecodeError::Truncated)?;
    match hdr.kind {
        abi::EVENT_DATA => {
            let head = abi::DataHeader::read_from(raw).ok_or(DecodeError::Truncated)?;
            let len = (head.len as usize).min(abi::MAX_DATA);
            let data = raw
                .get(abi::DATA_HEADER_SIZE..abi::DATA_HEADER_SIZE + len)
                .ok_or(DecodeError::Truncated)?;
            Ok(ProbeEvent::Data(DataChunk {
                // Data records carry no comm: `EventPreparer` names the process.
                meta: meta_of(&head.hdr, String::new()),
                direction: if head.direction == abi::DIR_EGRESS {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                tls: head.source == abi::SRC_TLS,
                offset: head.offset,
                total_len: head.total_len,
                lost_before: head.flags & abi::DATA_FLAG_LOST_BEFORE != 0,
                data: Bytes::copy_from_slice(data),
                api_key_id: None,
                mcp_session_id: None,
            }))
        }
        abi::EVENT_CONN_OPEN => {
            let ev = abi::ConnOpenEvent::read_from(raw).ok_or(DecodeError::Truncated)?;
            Ok(ProbeEvent::ConnOpen {
                meta: meta_of(&ev.ctl.hdr, comm_string(&ev.ctl.comm)),
                peer: peer_of(&ev),
                connect_ns: (ev.flags & abi::OPEN_FLAG_CONNECT != 0).then_some(ev.start_ns),
            })
        }
        kind @ (abi::EVENT_CONN_CLOSE
        | abi::EVENT_SSL_FD
        | abi::EVENT_SSL_FREE
        | abi::EVENT_EXEC_MAP
        | abi::EVENT_PROC_EXIT
        | abi::EVENT_TLS_START) => {
            let ev = abi::ControlEvent::read_from(raw).ok_or(DecodeError::Truncated)?;
            let meta = meta_of(&ev.hdr, comm_string(&ev.comm));
            Ok(match kind {
                abi::EVENT_CONN_CLOSE => ProbeEvent::ConnClose { meta },
                abi::EVENT_SSL_FD => ProbeEvent::SslFd { meta },
                abi::EVENT_SSL_FREE => ProbeEvent::SslFree { meta },
                abi::EVENT_EXEC_MAP => ProbeEvent::ExecMap { meta },
                abi::EVENT_TLS_START => ProbeEvent::TlsStart { meta },
                _ => ProbeEvent::ProcExit { meta },
            })
        }
        k => Err(DecodeError::UnknownKind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32) -> abi::EventHeader {
        abi::EventHeader {
            kind,
            tgid: 42,
            tid: 43,
            fd: -1,
            conn_id: 0x1000,
            ts_ns: 7,
        }
    }

    fn data_record(payload: &[u8]) -> Vec<u8> {
        let head = abi::DataHeader {
            hdr: header(abi::EVENT_DATA),
            direction: abi::DIR_EGRESS,
            source: abi::SRC_TLS,
            flags: 0,
            _pad: 0,
            len: payload.len() as u32,
            offset: 0,
            total_len: payload.len() as u32,
        };
        let mut raw = head.as_bytes().to_vec();
        raw.extend_from_slice(payload);
        raw
    }

    fn control_record(kind: u32) -> Vec<u8> {
        let mut comm = [0u8; abi::COMM_LEN];
        comm[..6].copy_from_slice(b"python");
        abi::ControlEvent {
            hdr: header(kind),
            comm,
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn decodes_data() {
        let ev = decode(&data_record(b"GET / HTTP/1.1\r\n")).expect("decodes");
        let ProbeEvent::Data(d) = ev else {
            panic!("not data")
        };
        assert_eq!((d.meta.pid, d.meta.tid), (42, 43));
        assert_eq!((d.meta.conn_id, d.meta.ts_ns), (0x1000, 7));
        assert_eq!(d.meta.fd, -1);
        assert_eq!(d.meta.comm, "");
        assert!(d.tls);
        assert_eq!(d.direction, Direction::Egress);
        assert_eq!(&d.data[..], b"GET / HTTP/1.1\r\n");
        assert!(!d.lost_before);
    }

    #[test]
    fn decodes_the_lost_before_flag() {
        let mut raw = data_record(b"x");
        raw[std::mem::offset_of!(abi::DataHeader, flags)] = abi::DATA_FLAG_LOST_BEFORE;
        let Ok(ProbeEvent::Data(d)) = decode(&raw) else {
            panic!("not data")
        };
        assert!(d.lost_before);
        // Unknown flag bits are not the lost flag.
        raw[std::mem::offset_of!(abi::DataHeader, flags)] = 0x80;
        let Ok(ProbeEvent::Data(d)) = decode(&raw) else {
            panic!("not data")
        };
        assert!(!d.lost_before);
    }

    #[test]
    fn decodes_control_records() {
        for (kind, name) in [
            (abi::EVENT_CONN_CLOSE, "ConnClose"),
            (abi::EVENT_SSL_FD, "SslFd"),
            (abi::EVENT_SSL_FREE, "SslFree"),
            (abi::EVENT_EXEC_MAP, "ExecMap"),
            (abi::EVENT_PROC_EXIT, "ProcExit"),
            (abi::EVENT_TLS_START, "TlsStart"),
        ] {
            let ev = decode(&control_record(kind)).expect("decodes");
            assert!(format!("{ev:?}").starts_with(name), "{ev:?}");
            let m = ev.meta();
            assert_eq!(
                (m.pid, m.tid, m.fd, m.conn_id, m.ts_ns),
                (42, 43, -1, 0x1000, 7)
            );
            assert_eq!(m.comm, "python");
        }
    }

    #[test]
    fn decodes_conn_open_peers() {
        let mut ev = abi::ConnOpenEvent {
            ctl: abi::ControlEvent {
                hdr: header(abi::EVENT_CONN_OPEN),
                comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            },
            family: abi::AF_INET,
            port: 8080,
            flags: abi::OPEN_FLAG_CONNECT,
            addr: [0; 16],
            start_ns: 5,
        };
        ev.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let Ok(ProbeEvent::ConnOpen {
            meta,
            peer,
            connect_ns,
        }) = decode(ev.as_bytes())
        else {
            panic!("not an open")
        };
        assert_eq!(meta.comm, "curl");
        // A connect's entry time comes with it; an accept's does not.
        assert_eq!((meta.ts_ns, connect_ns), (7, Some(5)));
        ev.flags = abi::OPEN_FLAG_ACCEPT;
        let Ok(ProbeEvent::ConnOpen { connect_ns, .. }) = decode(ev.as_bytes()) else {
            panic!("not an open")
        };
        assert_eq!(connect_ns, None);
        assert_eq!(peer, Some("127.0.0.1:8080".parse().expect("addr")));
        ev.family = abi::AF_INET6;
        ev.addr = Ipv6Addr::LOCALHOST.octets();
        let Ok(ProbeEvent::ConnOpen { peer, .. }) = decode(ev.as_bytes()) else {
            panic!("not an open")
        };
        assert_eq!(peer, Some("[::1]:8080".parse().expect("addr")));
        ev.family = 1;
        let Ok(ProbeEvent::ConnOpen { peer, .. }) = decode(ev.as_bytes()) else {
            panic!("not an open")
        };
        assert_eq!(peer, None);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let mut raw = data_record(b"abcdef");
        raw.truncate(raw.len() - 3);
        assert_eq!(decode(&raw), Err(DecodeError::Truncated));
        assert_eq!(decode(&[1, 0]), Err(DecodeError::Truncated));
        let mut raw = data_record(b"");
        raw[0] = 99;
        assert_eq!(decode(&raw), Err(DecodeError::UnknownKind(99)));
        // Every prefix of every kind is refused as truncated, never a panic.
        let mut open = control_record(abi::EVENT_CONN_OPEN);
        open.resize(size_of::<abi::ConnOpenEvent>(), 0);
        for full in [
            data_record(b"xyz"),
            control_record(abi::EVENT_SSL_FD),
            open.clone(),
        ] {
            for n in 0..full.len() {
                assert_eq!(decode(&full[..n]), Err(DecodeError::Truncated), "{n} bytes");
            }
            assert!(decode(&full).is_ok());
        }
        // A record at an odd address decodes the same.
        let mut odd = vec![0u8];
        odd.extend_from_slice(&open);
        assert_eq!(decode(&odd[1..]), decode(&open));
        // A stated length beyond the record is truncated, not read past it.
        let mut raw = data_record(b"ab");
        raw[std::mem::offset_of!(abi::DataHeader, len)..][..4]
            .copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(decode(&raw), Err(DecodeError::Truncated));
    }
}
