//! Connection identity: the sockets each process holds (fd → socket generation and peer, learned
//! from connect/accept) and the links between TLS connections and the sockets they talk over
//! (`SSL*` → fd, learned from syscalls made inside SSL calls). A plaintext connection is
//! (pid, socket generation); a TLS one is (pid, `SSL*`), and its socket, when known, gives it a
//! peer and ends it when the socket closes.
//!
//! A socket the process connected also keeps how it began: the `connect()` entry and the first
//! TLS record written (its ClientHello). The first connection made on it takes them, once
//! ([`Identities::take_open_times`]); a new socket on the same fd starts anew.
//!
//! Invariants: both tables are bounded, per process and in all (`LINKS_PER_CONNECTION` entries
//! per tracked connection allowed); a full table makes room by forgetting an entry of the process
//! that asks (or of the biggest holder), counted, never by refusing growth silently; one fd holds
//! at most `MAX_SSL_PER_FD` `SSL*` links; `ssl_fd` and `tls_by_fd` always describe the same links.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::policy::ConnTimes;
use crate::telemetry::{DropReason, SelfMetrics};

/// Sockets and SSL→fd links remembered, per tracked connection allowed.
pub(super) const LINKS_PER_CONNECTION: usize = 4;
/// SSL objects remembered per socket fd (HTTP/1.1 runs one TLS session per socket).
pub(super) const MAX_SSL_PER_FD: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Socket {
    generation: u64,
    peer: Option<SocketAddr>,
    /// The `connect()` entry, for a socket the process connected.
    connect_ns: Option<u64>,
    /// The first TLS record written on it.
    tls_start_ns: Option<u64>,
    /// A connection took the opening times.
    times_taken: bool,
}

/// Sockets and SSL→fd links of every traced process.
pub(super) struct Identities {
    metrics: Arc<SelfMetrics>,
    /// Most sockets (and most SSL links in all) one process may have remembered.
    per_process: usize,
    /// Most sockets remembered in all; also the bound of the SSL link table.
    total: usize,
    sockets: HashMap<u32, HashMap<i32, Socket>>,
    /// Entries in `sockets`.
    socket_count: usize,
    /// TLS connections by the fd they use: (pid, fd) -> SSL pointers, oldest first.
    tls_by_fd: HashMap<(u32, i32), Vec<u64>>,
    /// (pid, SSL*) -> fd.
    ssl_fd: HashMap<(u32, u64), i32>,
}

impl Identities {
    /// Tables sized for `max_connections` tracked connections, `per_process` of them per process.
    pub(super) fn new(
        max_connections: usize,
        per_process: usize,
        metrics: Arc<SelfMetrics>,
    ) -> Self {
        Identities {
            metrics,
            per_process: per_process.max(1) * LINKS_PER_CONNECTION,
            total: max_connections.max(1) * LINKS_PER_CONNECTION,
            sockets: HashMap::new(),
            socket_count: 0,
            tls_by_fd: HashMap::new(),
            ssl_fd: HashMap::new(),
        }
    }

    /// A socket opened on `fd`. Returns the generation of a different socket the fd held (the
    /// fd was reused without a close the tracker saw: that connection is over).
    pub(super) fn open_socket(
        &mut self,
        pid: u32,
        fd: i32,
        generation: u64,
        peer: Option<SocketAddr>,
    ) -> Option<u64> {
        let s = Socket {
            generation,
            peer,
            connect_ns: None,
            tls_start_ns: None,
            times_taken: false,
        };
        let old = self.insert_socket(pid, fd, s)?;
        (old.generation != generation).then_some(old.generation)
    }

    /// Remembers a socket; past the bounds the process's own (or the biggest holder's) oldest
    /// entries make room. Returns the socket it replaced on the same fd.
    fn insert_socket(&mut self, pid: u32, fd: i32, s: Socket) -> Option<Socket> {
        let mine = self.sockets.get(&pid).map_or(0, HashMap::len);
        let replaces = self.sockets.get(&pid).is_some_and(|m| m.contains_key(&fd));
        if !replaces && (mine >= self.per_process || self.socket_count >= self.total) {
            self.metrics.drop_for(DropReason::SocketTableFull);
            let victim = if mine >= self.per_process {
                Some(pid)
            } else {
                self.sockets
                    .iter()
                    .max_by_key(|(_, m)| m.len())
                    .map(|(p, _)| *p)
            };
            if let Some(vp) = victim
                && let Some(vfd) = self.sockets.get(&vp).and_then(|m| m.keys().next().copied())
            {
                self.close_socket(vp, vfd);
            }
        }
        let old = self.sockets.entry(pid).or_default().insert(fd, s);
        if old.is_none() {
            self.socket_count += 1;
        }
        old
    }

    /// The socket on `fd` closed.
    pub(super) fn close_socket(&mut self, pid: u32, fd: i32) {
        if let Some(m) = self.sockets.get_mut(&pid) {
            if m.remove(&fd).is_some() {
                self.socket_count -= 1;
            }
            if m.is_empty() {
                self.sockets.remove(&pid);
            }
        }
    }

    /// The socket `generation` on `fd` is being connected since `connect_ns`.
    pub(super) fn set_connect(&mut self, pid: u32, fd: i32, generation: u64, connect_ns: u64) {
        if let Some(s) = self.socket_mut(pid, fd, generation) {
            s.connect_ns = Some(connect_ns);
        }
    }

    /// The socket `generation` on `fd` carried its first TLS record out at `ts` (kept once: the
    /// kernel sends one per socket, a repeat changes nothing).
    pub(super) fn set_tls_start(&mut self, pid: u32, fd: i32, generation: u64, ts: u64) {
        if let Some(s) = self.socket_mut(pid, fd, generation) {
            s.tls_start_ns.get_or_insert(ts);
        }
    }

    fn socket_mut(&mut self, pid: u32, fd: i32, generation: u64) -> Option<&mut Socket> {
        self.sockets
            .get_mut(&pid)
            .and_then(|m| m.get_mut(&fd))
            .filter(|s| s.generation == generation)
    }

    /// The opening times of the socket on `fd` (of `generation`, when given), for the first
    /// connection made on it: None for a socket the tracker did not see connected, and for
    /// every later connection on the same socket (another `SSL*`, a connection tracked anew).
    pub(super) fn take_open_times(
        &mut self,
        pid: u32,
        fd: i32,
        generation: Option<u64>,
    ) -> Option<ConnTimes> {
        let s = self.sockets.get_mut(&pid)?.get_mut(&fd)?;
        if generation.is_some_and(|g| g != s.generation) || s.times_taken {
            return None;
        }
        let connect_ns = s.connect_ns?;
        s.times_taken = true;
        Some(ConnTimes {
            connect_ns,
            tls_start_ns: s.tls_start_ns,
            first_request_ns: None,
        })
    }

    /// The peer of the socket on `fd`, when known.
    pub(super) fn peer_of(&self, pid: u32, fd: i32) -> Option<SocketAddr> {
        self.sockets
            .get(&pid)
            .and_then(|m| m.get(&fd))
            .and_then(|s| s.peer)
    }

    /// The fd the TLS connection `ssl` talks over, when known.
    pub(super) fn fd_of_ssl(&self, pid: u32, ssl: u64) -> Option<i32> {
        self.ssl_fd.get(&(pid, ssl)).copied()
    }

    /// Links an SSL object to the socket it talks over (bounded: a process that invents SSL
    /// objects gets at most `MAX_SSL_PER_FD` per fd and its share of the table).
    pub(super) fn link_ssl(&mut self, pid: u32, ssl: u64, fd: i32) {
        let key = (pid, ssl);
        match self.ssl_fd.get(&key) {
            Some(old) if *old == fd => return,
            Some(old) => {
                let old = *old;
                self.unlink_from_fd(pid, old, ssl);
            }
            None => {
                if self.ssl_fd.len() >= self.total {
                    self.metrics.drop_for(DropReason::SslLinkTableFull);
                    return;
                }
            }
        }
        self.ssl_fd.insert(key, fd);
        let list = self.tls_by_fd.entry((pid, fd)).or_default();
        list.push(ssl);
        if list.len() > MAX_SSL_PER_FD {
            let oldest = list.remove(0);
            self.ssl_fd.remove(&(pid, oldest));
            self.metrics.drop_for(DropReason::SslLinksPerFd);
        }
    }

    /// The SSL object was freed: its link goes.
    pub(super) fn forget_ssl(&mut self, pid: u32, ssl: u64) {
        if let Some(fd) = self.ssl_fd.remove(&(pid, ssl)) {
            self.unlink_from_fd(pid, fd, ssl);
        }
    }

    fn unlink_from_fd(&mut self, pid: u32, fd: i32, ssl: u64) {
        if let Some(v) = self.tls_by_fd.get_mut(&(pid, fd)) {
            v.retain(|s| *s != ssl);
            if v.is_empty() {
                self.tls_by_fd.remove(&(pid, fd));
            }
        }
    }

    /// Forgets the TLS connections linked to `fd` (its socket is over) and returns them: they
    /// are over too.
    pub(super) fn take_tls_on_fd(&mut self, pid: u32, fd: i32) -> Vec<u64> {
        let ssls = self.tls_by_fd.remove(&(pid, fd)).unwrap_or_default();
        for ssl in &ssls {
            self.ssl_fd.remove(&(pid, *ssl));
        }
        ssls
    }

    /// The process exited: its sockets and links go.
    pub(super) fn forget_process(&mut self, pid: u32) {
        if let Some(s) = self.sockets.remove(&pid) {
            self.socket_count -= s.len();
        }
        let fds: Vec<(u32, i32)> = self
            .tls_by_fd
            .keys()
            .filter(|(p, _)| *p == pid)
            .copied()
            .collect();
        for key in fds {
            for ssl in self.tls_by_fd.remove(&key).unwrap_or_default() {
                self.ssl_fd.remove(&(pid, ssl));
            }
        }
        self.ssl_fd.retain(|(p, _), _| *p != pid);
    }

    /// SSL links remembered (tests).
    #[cfg(test)]
    pub(super) fn ssl_links(&self) -> usize {
        self.ssl_fd.len()
    }

    /// The most SSL links one fd holds (tests).
    #[cfg(test)]
    pub(super) fn most_links_on_one_fd(&self) -> usize {
        self.tls_by_fd.values().map(Vec::len).max().unwrap_or(0)
    }

    /// Sockets remembered, as counted, and as held in the table (tests).
    #[cfg(test)]
    pub(super) fn socket_counts(&self) -> (usize, usize) {
        (
            self.socket_count,
            self.sockets.values().map(HashMap::len).sum(),
        )
    }
}
