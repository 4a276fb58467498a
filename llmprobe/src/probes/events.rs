//! Probe events as the rest of the agent sees them: decoded from the ring buffer's `#[repr(C)]`
//! records (see `llmprobe-common`), and serialisable for `record`/`replay`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use llmprobe_common as abi;
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
        /// `ROLE_HINT_*`.
        role_hint: u8,
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

fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
}
fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
}
fn read_u16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_ne_bytes)
}

/// Turns a comm byte array into a string (up to the first NUL).
pub fn comm_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

// Field offsets inside `EventHeader` / `DataEvent` / `ConnEvent` (checked by the size asserts in
// llmprobe-common and by the tests below).
const H_KIND: usize = 0;
const H_TGID: usize = 4;
const H_TID: usize = 8;
const H_FD: usize = 12;
const H_CONN: usize = 16;
const H_TS: usize = 24;
const H_COMM: usize = 32;
const HDR: usize = std::mem::size_of::<abi::EventHeader>();

/// Decodes one ring-buffer record.
pub fn decode(raw: &[u8]) -> Result<ProbeEvent, DecodeError> {
    let kind = read_u32(raw, H_KIND).ok_or(DecodeError::Truncated)?;
    if raw.len() < HDR {
        return Err(DecodeError::Truncated);
    }
    let meta = EventMeta {
        pid: read_u32(raw, H_TGID).ok_or(DecodeError::Truncated)?,
        tid: read_u32(raw, H_TID).ok_or(DecodeError::Truncated)?,
        fd: read_u32(raw, H_FD).ok_or(DecodeError::Truncated)? as i32,
        conn_id: read_u64(raw, H_CONN).ok_or(DecodeError::Truncated)?,
        ts_ns: read_u64(raw, H_TS).ok_or(DecodeError::Truncated)?,
        comm: comm_string(&raw[H_COMM..H_COMM + abi::COMM_LEN]),
        container: None,
    };
    match kind {
        abi::EVENT_DATA => {
            let direction = *raw.get(HDR).ok_or(DecodeError::Truncated)?;
            let source = *raw.get(HDR + 1).ok_or(DecodeError::Truncated)?;
            let flags = *raw.get(HDR + 2).ok_or(DecodeError::Truncated)?;
            let len = read_u32(raw, HDR + 4).ok_or(DecodeError::Truncated)? as usize;
            let offset = read_u32(raw, HDR + 8).ok_or(DecodeError::Truncated)?;
            let total_len = read_u32(raw, HDR + 12).ok_or(DecodeError::Truncated)?;
            let start = abi::DATA_HEADER_SIZE;
            let data = raw
                .get(start..start + len.min(abi::MAX_DATA))
                .ok_or(DecodeError::Truncated)?;
            Ok(ProbeEvent::Data(DataChunk {
                meta,
                direction: if direction == abi::DIR_EGRESS {
                    Direction::Egress
                } else {
                    Direction::Ingress
                },
                tls: source == abi::SRC_TLS,
                offset,
                total_len,
                lost_before: flags & abi::DATA_FLAG_LOST_BEFORE != 0,
                data: Bytes::copy_from_slice(data),
            }))
        }
        abi::EVENT_CONN_OPEN => {
            let family = read_u16(raw, HDR).ok_or(DecodeError::Truncated)?;
            let port = read_u16(raw, HDR + 2).ok_or(DecodeError::Truncated)?;
            let role_hint = *raw.get(HDR + 4).ok_or(DecodeError::Truncated)?;
            let addr = raw.get(HDR + 8..HDR + 24).ok_or(DecodeError::Truncated)?;
            let peer = match family {
                2 => Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
                    port,
                )),
                10 => {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(addr);
                    Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
                }
                _ => None,
            };
            Ok(ProbeEvent::ConnOpen {
                meta,
                peer,
                role_hint,
            })
        }
        abi::EVENT_CONN_CLOSE => Ok(ProbeEvent::ConnClose { meta }),
        abi::EVENT_SSL_FD => Ok(ProbeEvent::SslFd { meta }),
        abi::EVENT_SSL_FREE => Ok(ProbeEvent::SslFree { meta }),
        abi::EVENT_EXEC_MAP => Ok(ProbeEvent::ExecMap { meta }),
        abi::EVENT_PROC_EXIT => Ok(ProbeEvent::ProcExit { meta }),
        k => Err(DecodeError::UnknownKind(k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_the_abi() {
        assert_eq!(std::mem::offset_of!(abi::EventHeader, tgid), H_TGID);
        assert_eq!(std::mem::offset_of!(abi::EventHeader, tid), H_TID);
        assert_eq!(std::mem::offset_of!(abi::EventHeader, fd), H_FD);
        assert_eq!(std::mem::offset_of!(abi::EventHeader, conn_id), H_CONN);
        assert_eq!(std::mem::offset_of!(abi::EventHeader, ts_ns), H_TS);
        assert_eq!(std::mem::offset_of!(abi::EventHeader, comm), H_COMM);
        assert_eq!(std::mem::offset_of!(abi::DataEvent, flags), HDR + 2);
        assert_eq!(std::mem::offset_of!(abi::DataEvent, len), HDR + 4);
        assert_eq!(std::mem::offset_of!(abi::DataEvent, offset), HDR + 8);
        assert_eq!(std::mem::offset_of!(abi::DataEvent, total_len), HDR + 12);
        assert_eq!(
            std::mem::offset_of!(abi::DataEvent, data),
            abi::DATA_HEADER_SIZE
        );
        assert_eq!(std::mem::offset_of!(abi::ConnEvent, port), HDR + 2);
        assert_eq!(std::mem::offset_of!(abi::ConnEvent, role_hint), HDR + 4);
        assert_eq!(std::mem::offset_of!(abi::ConnEvent, addr), HDR + 8);
    }

    fn data_record(payload: &[u8]) -> Vec<u8> {
        let mut raw = vec![0u8; abi::DATA_HEADER_SIZE];
        raw[H_KIND..4].copy_from_slice(&abi::EVENT_DATA.to_ne_bytes());
        raw[H_TGID..H_TGID + 4].copy_from_slice(&42u32.to_ne_bytes());
        raw[H_FD..H_FD + 4].copy_from_slice(&(-1i32).to_ne_bytes());
        raw[H_TS..H_TS + 8].copy_from_slice(&7u64.to_ne_bytes());
        raw[H_COMM..H_COMM + 6].copy_from_slice(b"python");
        raw[HDR + 1] = abi::SRC_TLS;
        raw[HDR + 4..HDR + 8].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        raw[HDR + 12..HDR + 16].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        raw.extend_from_slice(payload);
        raw
    }

    #[test]
    fn decodes_data() {
        let ev = decode(&data_record(b"GET / HTTP/1.1\r\n")).expect("decodes");
        let ProbeEvent::Data(d) = ev else {
            panic!("not data")
        };
        assert_eq!(d.meta.pid, 42);
        assert_eq!(d.meta.fd, -1);
        assert_eq!(d.meta.comm, "python");
        assert!(d.tls);
        assert_eq!(d.direction, Direction::Egress);
        assert_eq!(&d.data[..], b"GET / HTTP/1.1\r\n");
        assert!(!d.lost_before);
    }

    #[test]
    fn decodes_the_lost_before_flag() {
        let mut raw = data_record(b"x");
        raw[HDR + 2] = abi::DATA_FLAG_LOST_BEFORE;
        let Ok(ProbeEvent::Data(d)) = decode(&raw) else {
            panic!("not data")
        };
        assert!(d.lost_before);
        // Unknown flag bits are not the lost flag.
        raw[HDR + 2] = 0x80;
        let Ok(ProbeEvent::Data(d)) = decode(&raw) else {
            panic!("not data")
        };
        assert!(!d.lost_before);
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
    }
}
