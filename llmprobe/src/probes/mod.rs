//! Stage 1: the kernel side as userspace sees it. Loads and attaches the eBPF programs
//! ([`loader`]), finds TLS libraries ([`discovery`]), decodes ring-buffer records into
//! [`events::ProbeEvent`]s, masks secret header values ([`scrub`]) and names each event's process,
//! then hands batches to the connection tracker. [`capture`] stores the same events for replay.

pub mod capture;
pub mod discovery;
pub mod events;
pub mod loader;
pub mod scrub;

use std::collections::HashMap;

use events::ProbeEvent;

/// Prepares raw events for the pipeline: masks secrets and replaces the thread name with the
/// process name (the thread-group leader's comm), so live runs and replays agree.
pub struct EventPreparer {
    scrubber: scrub::SecretScrubber,
    names: HashMap<u32, String>,
    /// Read process names from /proc (live); off in replay, where captures already hold them.
    resolve_names: bool,
}

/// Most process names cached.
const MAX_NAMES: usize = 65_536;

impl EventPreparer {
    /// For live capture (`resolve_names` = true) or replay (false).
    pub fn new(resolve_names: bool) -> Self {
        EventPreparer {
            scrubber: scrub::SecretScrubber::new(),
            names: HashMap::new(),
            resolve_names,
        }
    }

    /// Secret header values masked so far.
    pub fn masked_values(&self) -> u64 {
        self.scrubber.masked_values
    }

    fn process_name(&mut self, pid: u32, thread_comm: &str) -> String {
        if let Some(n) = self.names.get(&pid) {
            return n.clone();
        }
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| thread_comm.to_owned());
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        self.names.insert(pid, name.clone());
        name
    }

    /// Prepares one event in place.
    pub fn prepare(&mut self, ev: &mut ProbeEvent) {
        if self.resolve_names {
            let (pid, comm) = (ev.meta().pid, ev.meta().comm.clone());
            match ev {
                // A new program image may have a new name; an exited pid may be reused.
                ProbeEvent::ExecMap { meta } if meta.fd < 0 => {
                    self.names.remove(&pid);
                    meta.comm = self.process_name(pid, &comm);
                }
                ProbeEvent::ProcExit { meta } => {
                    meta.comm = self.process_name(pid, &comm);
                    self.names.remove(&pid);
                }
                _ => {
                    let name = self.process_name(pid, &comm);
                    set_comm(ev, name);
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

fn set_comm(ev: &mut ProbeEvent, name: String) {
    match ev {
        ProbeEvent::Data(d) => d.meta.comm = name,
        ProbeEvent::ConnOpen { meta, .. }
        | ProbeEvent::ConnClose { meta }
        | ProbeEvent::SslFd { meta }
        | ProbeEvent::SslFree { meta }
        | ProbeEvent::ExecMap { meta }
        | ProbeEvent::ProcExit { meta } => meta.comm = name,
    }
}
