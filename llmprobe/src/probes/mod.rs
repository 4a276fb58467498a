//! Stage 1: the kernel side as userspace sees it. Loads and attaches the eBPF programs
//! ([`loader`]), finds TLS libraries ([`discovery`]), decodes ring-buffer records into
//! [`events::ProbeEvent`]s, masks secrets ([`scrub`], by the rules of [`crate::secrets`]) and names each event's process,
//! then hands batches to the connection tracker. [`capture`] stores the same events for replay.

pub mod capture;
pub mod discovery;
pub mod events;
pub mod kernel_stats;
pub mod loader;
pub mod recorder;
pub mod scrub;

use std::collections::HashMap;

use events::ProbeEvent;

/// Prepares raw events for the pipeline: masks secrets and replaces the thread name with the
/// process name (the thread-group leader's comm), so live runs and replays agree.
pub struct EventPreparer {
    scrubber: scrub::SecretScrubber,
    names: HashMap<u32, (String, Option<String>)>,
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
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_else(|_| thread_comm.to_owned());
        let container = container_of(pid);
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        self.names.insert(pid, (name.clone(), container.clone()));
        (name, container)
    }

    /// Prepares one event in place.
    pub fn prepare(&mut self, ev: &mut ProbeEvent) {
        if self.resolve_names {
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
    use super::container_id;

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
