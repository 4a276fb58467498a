//! Stage 1: the kernel side as userspace sees it. Loads and attaches the eBPF programs
//! ([`loader`]), finds TLS libraries ([`discovery`]), decodes ring-buffer records into
//! [`events::ProbeEvent`]s, and prepares them ([`EventPreparer`]: masks secrets with [`scrub`], by
//! the rules of [`crate::secrets`], and names each event's process) for the connection tracker;
//! [`crate::pipeline`] runs these pieces as stages. [`capture`] stores the same events for replay.

pub mod capture;
pub mod discovery;
pub mod events;
pub mod golang;
pub mod kernel_stats;
pub mod loader;
pub mod recorder;
pub mod scope;
pub mod scrub;
pub mod sni;

use std::collections::HashMap;

use events::ProbeEvent;

/// Prepares raw events for the pipeline: masks secrets and replaces the thread name with the
/// process name (the thread-group leader's comm), so live runs and replays agree. Live, it also
/// fills in what the kernel leaves out of data records to keep its per-event work small: the
/// process name (data records carry no comm) and a TLS record's socket fd (from `SslFd`).
pub struct EventPreparer {
    scrubber: scrub::SecretScrubber,
    names: HashMap<u32, (String, Option<String>)>,
    /// Read process names from /proc (live); off in replay, where captures already hold them.
    resolve_names: bool,
    /// Live: the socket fd last reported for each SSL object, by pid (dropped whole at exit).
    ssl_fds: HashMap<u32, HashMap<u64, i32>>,
    /// Entries in `ssl_fds`, at most [`MAX_SSL_FDS`].
    ssl_fd_count: usize,
}

/// Most process names cached.
const MAX_NAMES: usize = 65_536;
/// Most SSL->fd links remembered (the kernel's `SSL_FDS` map holds as many); at the bound the
/// process holding the most loses its links.
const MAX_SSL_FDS: usize = 65_536;
/// Most SSL->fd links remembered per process; at the bound the process's own links start over
/// (a process inventing TLS objects, e.g. forged Go `*Conn`s, cannot clear other processes').
const MAX_SSL_FDS_PER_PID: usize = 8192;

impl EventPreparer {
    /// For live capture (`resolve_names` = true) or replay (false).
    pub fn new(resolve_names: bool) -> Self {
        EventPreparer {
            scrubber: scrub::SecretScrubber::new(),
            names: HashMap::new(),
            resolve_names,
            ssl_fds: HashMap::new(),
            ssl_fd_count: 0,
        }
    }

    /// Secret values masked so far.
    pub fn masked_values(&self) -> u64 {
        self.scrubber.stats.masked_values
    }

    /// The masker's counts (masked values, lost and evicted stream states).
    pub fn scrub_stats(&self) -> scrub::ScrubStats {
        self.scrubber.stats
    }

    fn process(&mut self, pid: u32, thread_comm: &str) -> (String, Option<String>) {
        if let Some(n) = self.names.get(&pid) {
            return n.clone();
        }
        let name = match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(s) => s.trim_end().to_owned(),
            // The process is gone: a data record has no thread name to fall back on, so nothing
            // is cached and the process's next control record (which carries one) names it.
            Err(_) if thread_comm.is_empty() => return (String::new(), None),
            Err(_) => thread_comm.to_owned(),
        };
        let container = container_of(pid);
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        self.names.insert(pid, (name.clone(), container.clone()));
        (name, container)
    }

    /// Remembers (SslFd) or forgets (SslFree, ProcExit) an SSL object's socket, and gives a TLS
    /// data record (sent without its fd) the socket last reported for its SSL object.
    fn track_ssl_fd(&mut self, ev: &mut ProbeEvent) {
        match ev {
            ProbeEvent::SslFd { meta } => {
                let known = self
                    .ssl_fds
                    .get(&meta.pid)
                    .is_some_and(|m| m.contains_key(&meta.conn_id));
                if !known {
                    let mine = self.ssl_fds.get(&meta.pid).map_or(0, HashMap::len);
                    let drop_pid = if mine >= MAX_SSL_FDS_PER_PID {
                        Some(meta.pid)
                    } else if self.ssl_fd_count >= MAX_SSL_FDS {
                        self.ssl_fds
                            .iter()
                            .max_by_key(|(_, m)| m.len())
                            .map(|(pid, _)| *pid)
                    } else {
                        None
                    };
                    if let Some(fds) = drop_pid.and_then(|p| self.ssl_fds.remove(&p)) {
                        self.ssl_fd_count -= fds.len();
                    }
                    self.ssl_fd_count += 1;
                }
                let fds = self.ssl_fds.entry(meta.pid).or_default();
                fds.insert(meta.conn_id, meta.fd);
            }
            ProbeEvent::SslFree { meta } => {
                if let Some(fds) = self.ssl_fds.get_mut(&meta.pid)
                    && fds.remove(&meta.conn_id).is_some()
                {
                    self.ssl_fd_count -= 1;
                    if fds.is_empty() {
                        self.ssl_fds.remove(&meta.pid);
                    }
                }
            }
            ProbeEvent::ProcExit { meta } => {
                if let Some(fds) = self.ssl_fds.remove(&meta.pid) {
                    self.ssl_fd_count -= fds.len();
                }
            }
            ProbeEvent::Data(d) if d.tls && d.meta.fd < 0 => {
                if let Some(fd) = self
                    .ssl_fds
                    .get(&d.meta.pid)
                    .and_then(|m| m.get(&d.meta.conn_id))
                {
                    d.meta.fd = *fd;
                }
            }
            _ => {}
        }
    }

    /// Prepares one event in place.
    pub fn prepare(&mut self, ev: &mut ProbeEvent) {
        if self.resolve_names {
            self.track_ssl_fd(ev);
            let (pid, comm) = (ev.meta().pid, ev.meta().comm.clone());
            match ev {
                // A new program image may have a new name; an exited pid may be reused.
                ProbeEvent::ExecMap { meta } if meta.fd < 0 => {
                    self.names.remove(&pid);
                    (meta.comm, meta.container) = self.process(pid, &comm);
                }
                ProbeEvent::ProcExit { meta } => {
                    (meta.comm, meta.container) = self.process(pid, &comm);
                    self.names.remove(&pid);
                }
                _ => {
                    let (name, container) = self.process(pid, &comm);
                    set_process(ev, name, container);
                }
            }
        }
        match ev {
            ProbeEvent::Data(d) => self.scrubber.scrub(d),
            ProbeEvent::SslFree { meta } | ProbeEvent::ConnClose { meta } => {
                self.scrubber.forget(meta.pid, meta.conn_id)
            }
            _ => {}
        }
    }
}

fn set_process(ev: &mut ProbeEvent, name: String, container: Option<String>) {
    let meta = match ev {
        ProbeEvent::Data(d) => &mut d.meta,
        ProbeEvent::ConnOpen { meta, .. }
        | ProbeEvent::ConnClose { meta }
        | ProbeEvent::TlsStart { meta }
        | ProbeEvent::SslFd { meta }
        | ProbeEvent::SslFree { meta }
        | ProbeEvent::ExecMap { meta }
        | ProbeEvent::ProcExit { meta } => meta,
    };
    meta.comm = name;
    meta.container = container;
}

/// The container id of a process (host pid namespace), from its `/proc/PID/cgroup`.
pub fn container_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|c| container_id(&c))
}

/// The container id in a `/proc/PID/cgroup` text: the last 64-hex-digit run in any cgroup path
/// (docker `/docker/<id>`, containerd `cri-containerd-<id>.scope`, CRI-O `crio-<id>.scope`,
/// kubepods `.../pod<uid>/<id>`). None for processes outside containers.
pub fn container_id(cgroup: &str) -> Option<String> {
    let mut found = None;
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        let bytes = path.as_bytes();
        let mut run = 0usize;
        for (i, b) in bytes.iter().enumerate() {
            if b.is_ascii_hexdigit() && !b.is_ascii_uppercase() {
                run += 1;
                let next_hex = bytes.get(i + 1).is_some_and(|n| n.is_ascii_hexdigit());
                if run == 64 && !next_hex {
                    found = Some(path[i + 1 - 64..=i].to_owned());
                }
            } else {
                run = 0;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::EventPreparer;
    use super::container_id;
    use super::events::{DataChunk, Direction, EventMeta, ProbeEvent};

    /// A pid no process has (above the kernel's `pid_max` limit of 2^22).
    const GONE: u32 = 4_000_000_000;

    fn meta(conn_id: u64, fd: i32, comm: &str) -> EventMeta {
        EventMeta {
            pid: GONE,
            tid: GONE,
            fd,
            conn_id,
            ts_ns: 1,
            comm: comm.to_owned(),
            container: None,
        }
    }

    fn tls_data(conn_id: u64) -> ProbeEvent {
        ProbeEvent::Data(DataChunk {
            meta: meta(conn_id, -1, ""),
            direction: Direction::Egress,
            tls: true,
            offset: 0,
            total_len: 1,
            lost_before: false,
            data: bytes::Bytes::from_static(b"x"),
            api_key_id: None,
            mcp_session_id: None,
        })
    }

    #[test]
    fn live_events_get_the_ssl_socket_and_a_name_from_control_records() {
        let mut prep = EventPreparer::new(true);
        // A data record of a process that is gone, before any control record: no name, and
        // none cached.
        let mut ev = tls_data(0x1000);
        prep.prepare(&mut ev);
        assert_eq!((ev.meta().comm.as_str(), ev.meta().fd), ("", -1));
        let mut ev = ProbeEvent::SslFd {
            meta: meta(0x1000, 7, "python"),
        };
        prep.prepare(&mut ev);
        assert_eq!(ev.meta().comm, "python");
        let mut ev = tls_data(0x1000);
        prep.prepare(&mut ev);
        assert_eq!((ev.meta().comm.as_str(), ev.meta().fd), ("python", 7));
        // Another SSL object of the process has no socket yet.
        let mut ev = tls_data(0x2000);
        prep.prepare(&mut ev);
        assert_eq!(ev.meta().fd, -1);
        let mut ev = ProbeEvent::SslFree {
            meta: meta(0x1000, -1, "python"),
        };
        prep.prepare(&mut ev);
        assert_eq!(prep.ssl_fd_count, 0);
        let mut ev = tls_data(0x1000);
        prep.prepare(&mut ev);
        assert_eq!(ev.meta().fd, -1);
        // Replay keeps what the capture says.
        let mut prep = EventPreparer::new(false);
        let mut ev = ProbeEvent::SslFd {
            meta: meta(0x1000, 7, "python"),
        };
        prep.prepare(&mut ev);
        let mut ev = tls_data(0x1000);
        prep.prepare(&mut ev);
        assert_eq!(ev.meta().fd, -1);
    }

    #[test]
    fn ssl_links_are_dropped_at_exit_and_bounded() {
        let mut prep = EventPreparer::new(true);
        for id in 0..3u64 {
            prep.prepare(&mut ProbeEvent::SslFd {
                meta: meta(id * 8, 3, "p"),
            });
        }
        // A new fd for a known SSL object is not a new entry.
        prep.prepare(&mut ProbeEvent::SslFd {
            meta: meta(0, 4, "p"),
        });
        assert_eq!(prep.ssl_fd_count, 3);
        prep.prepare(&mut ProbeEvent::ProcExit {
            meta: meta(0, -1, "p"),
        });
        assert_eq!((prep.ssl_fd_count, prep.ssl_fds.len()), (0, 0));
        // Another process's link survives a process that invents SSL objects past its share.
        let mut other = meta(0x10, 5, "victim");
        other.pid = 77;
        prep.track_ssl_fd(&mut ProbeEvent::SslFd { meta: other });
        for id in 0..=super::MAX_SSL_FDS_PER_PID as u64 {
            prep.track_ssl_fd(&mut ProbeEvent::SslFd {
                meta: meta(id * 8, 3, "p"),
            });
        }
        assert_eq!(prep.ssl_fd_count, 2);
        assert_eq!(
            prep.ssl_fds.get(&77).map(std::collections::HashMap::len),
            Some(1)
        );
        // Past the total, the largest holder's links go.
        for pid in 0..(super::MAX_SSL_FDS / super::MAX_SSL_FDS_PER_PID) as u32 {
            for id in 0..(super::MAX_SSL_FDS_PER_PID - 1) as u64 {
                let mut m = meta(id * 8, 3, "p");
                m.pid = 1000 + pid;
                prep.track_ssl_fd(&mut ProbeEvent::SslFd { meta: m });
            }
        }
        assert!(prep.ssl_fd_count <= super::MAX_SSL_FDS);
        assert_eq!(
            prep.ssl_fds.get(&77).map(std::collections::HashMap::len),
            Some(1)
        );
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "4f1c2a3b5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8";
        assert_eq!(
            container_id(&format!("0::/system.slice/docker-{id}.scope\n")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id(&format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id(&format!("12:memory:/docker/{id}\n0::/")).as_deref(),
            Some(id)
        );
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(container_id(&format!("0::/x/{id}0")), None);
    }
}
