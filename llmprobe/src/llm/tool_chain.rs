//! Agent loops as chains: a call whose request carries the results of tool calls an earlier call
//! made is linked to that call (`follows_span_ids`, an OTLP span link) and joins its trace, so
//! one task shows up as one chain however many model calls it took.
//!
//! Stage: enrich (and replay's record steps), after the tracker; records arrive in end order, so
//! the call that asked for a tool has ended before the call that answers it is seen. Every
//! record gets its `span_id` here (the exporters use it), from a keyed hash of the call, so a
//! replay under the same id key gives the same ids.
//!
//! Invariants: only keyed hashes of tool-call ids are held; a call is linked only to calls of
//! the same process and role (a server's, only to calls from the same peer address); an id
//! names the first call that made it (a later call reusing it cannot take its links over); the
//! index holds at most [`MAX_ENTRIES`] ids in all and [`MAX_PER_PROCESS`] per process and
//! role (a holder past its share forgets its own oldest ids first; with the index full, the
//! biggest holder's oldest go, found in O(log n)), every eviction counted. Span ids are unique
//! among the last [`RECENT_SPANS`] records (a collision is drawn again).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use super::LlmCall;

/// Most tool-call ids held in all.
pub const MAX_ENTRIES: usize = 16384;
/// Most tool-call ids held for one process (and role).
pub const MAX_PER_PROCESS: usize = 2048;
/// Most links one call gets (distinct earlier calls).
pub const MAX_LINKS: usize = 16;
/// Span ids remembered to keep them unique.
pub const RECENT_SPANS: usize = 4096;

/// Who an id belongs to: process, role and, for a server, a hash of the peer's address.
type Holder = (u32, &'static str, u64);

/// The span a tool call was asked for in: (trace id, span id), hex.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    trace: String,
    span: String,
}

#[derive(Default)]
struct Process {
    ids: HashMap<u64, Target>,
    order: VecDeque<u64>,
}

impl Process {
    fn evict_oldest(&mut self) -> bool {
        while let Some(id) = self.order.pop_front() {
            if self.ids.remove(&id).is_some() {
                return true;
            }
        }
        false
    }
}

/// The tool-call index and the span ids of records.
#[derive(Default)]
pub struct ToolChains {
    procs: HashMap<Holder, Process>,
    /// (ids held, holder): the biggest holder is the last.
    sizes: BTreeSet<(usize, Holder)>,
    total: usize,
    recent: HashSet<String>,
    recent_order: VecDeque<String>,
    /// Ids forgotten to stay in bounds.
    pub evicted: u64,
}

/// A keyed hex id (16 digits, or 32) for `call` in `domain`, drawn again with `salt`.
fn call_id(call: &LlmCall, domain: &str, digits: usize, salt: u32) -> String {
    let mut material = Vec::with_capacity(96 + call.http_path.len());
    let mut field = |b: &[u8]| {
        material.extend_from_slice(&(b.len() as u64).to_le_bytes());
        material.extend_from_slice(b);
    };
    field(&call.pid.to_le_bytes());
    field(call.role.as_bytes());
    field(&call.detail.start_unix_ns.to_le_bytes());
    field(&call.detail.end_unix_ns.to_le_bytes());
    field(call.http_path.as_bytes());
    field(call.request_id.as_deref().unwrap_or("").as_bytes());
    field(call.peer_addr.as_deref().unwrap_or("").as_bytes());
    field(&salt.to_le_bytes());
    let key = crate::ids::key();
    let mut out = key.id(domain, &material);
    if digits > 16 {
        out.push_str(&key.id(&format!("{domain}.2"), &material));
    }
    out
}

/// The holder of a call's ids.
fn holder(call: &LlmCall) -> Holder {
    let peer = match call.role {
        // A server's clients are apart: one cannot link to, or evict, another's calls.
        "server" => call.peer_addr.as_deref().map_or(0, |p| {
            let ip = p.rsplit_once(':').map_or(p, |(ip, _)| ip);
            crate::ids::key().id_u64("tool_chain.peer", ip.as_bytes())
        }),
        _ => 0,
    };
    (call.pid, call.role, peer)
}

impl ToolChains {
    /// Ids held (tests, metrics).
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Gives `call` its span id, links it to the earlier calls whose tool calls its request
    /// answers, and remembers the tool calls its response made.
    pub fn observe(&mut self, call: &mut LlmCall) {
        let span = match call.detail.span_id.clone() {
            Some(s) => s,
            None => self.fresh_span(call),
        };
        call.detail.span_id = Some(span.clone());
        call.span_id = Some(span.clone());
        let key = holder(call);

        // The calls this one answers.
        if !call.detail.tool_result_ids.is_empty()
            && let Some(p) = self.procs.get(&key)
        {
            let mut links: Vec<Target> = Vec::new();
            for id in &call.detail.tool_result_ids {
                if let Some(t) = p.ids.get(id)
                    && t.span != span
                    && !links.contains(t)
                    && links.len() < MAX_LINKS
                {
                    links.push(t.clone());
                }
            }
            if let Some(first) = links.first() {
                // Without a trace of its own, the call joins the chain's trace.
                if call.trace_id.is_none() && call.detail.trace_id.is_none() {
                    call.detail.trace_id = Some(first.trace.clone());
                }
                call.follows_span_ids = Some(links.iter().map(|t| t.span.clone()).collect());
                call.detail.links = links.into_iter().map(|t| (t.trace, t.span)).collect();
            }
        }

        // The tool calls it made, for the calls that will answer them.
        if call.detail.tool_call_ids.is_empty() {
            return;
        }
        let trace = match (&call.trace_id, &call.detail.trace_id) {
            (Some(t), _) | (None, Some(t)) => t.clone(),
            (None, None) => {
                let t = call_id(call, "trace", 32, 0);
                call.detail.trace_id = Some(t.clone());
                t
            }
        };
        let target = Target { trace, span };
        for id in std::mem::take(&mut call.detail.tool_call_ids) {
            self.insert(key, id, target.clone());
        }
    }

    /// A span id for `call`, unique among the recent ones.
    fn fresh_span(&mut self, call: &LlmCall) -> String {
        let mut salt = 0;
        let span = loop {
            let s = call_id(call, "span", 16, salt);
            if !self.recent.contains(&s) || salt > 16 {
                break s;
            }
            salt += 1;
        };
        if self.recent_order.len() >= RECENT_SPANS
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
        self.recent.insert(span.clone());
        self.recent_order.push_back(span.clone());
        span
    }

    /// Moves `key`'s entry in `sizes` from `from` ids to `to`.
    fn resize(&mut self, key: Holder, from: usize, to: usize) {
        self.sizes.remove(&(from, key));
        if to > 0 {
            self.sizes.insert((to, key));
        }
    }

    /// Forgets `key`'s oldest id.
    fn evict_from(&mut self, key: Holder) -> bool {
        let Some(p) = self.procs.get_mut(&key) else {
            return false;
        };
        let before = p.ids.len();
        if !p.evict_oldest() {
            return false;
        }
        let after = p.ids.len();
        if after == 0 {
            self.procs.remove(&key);
        }
        self.resize(key, before, after);
        self.total -= 1;
        self.evicted += 1;
        true
    }

    fn insert(&mut self, key: Holder, id: u64, target: Target) {
        let p = self.procs.entry(key).or_default();
        // The first call that made an id keeps it.
        if p.ids.contains_key(&id) {
            return;
        }
        let before = p.ids.len();
        p.ids.insert(id, target);
        p.order.push_back(id);
        let after = p.ids.len();
        self.resize(key, before, after);
        self.total += 1;
        if after > MAX_PER_PROCESS {
            self.evict_from(key);
        }
        while self.total > MAX_ENTRIES {
            let Some(&(_, big)) = self.sizes.last() else {
                break;
            };
            if !self.evict_from(big) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(pid: u32, start: i64, made: &[u64], answers: &[u64]) -> LlmCall {
        let mut c = LlmCall {
            pid,
            role: "client",
            http_path: "/v1/chat/completions".into(),
            ..Default::default()
        };
        c.detail.start_unix_ns = start;
        c.detail.end_unix_ns = start + 10;
        c.detail.tool_call_ids = made.to_vec();
        c.detail.tool_result_ids = answers.to_vec();
        c
    }

    #[test]
    fn an_agent_loop_is_one_chain() {
        let mut t = ToolChains::default();
        let mut a = call(1, 100, &[7, 8], &[]);
        t.observe(&mut a);
        let a_span = a.span_id.clone().expect("present");
        assert_eq!(a_span.len(), 16);
        let a_trace = a.detail.trace_id.clone().expect("present");
        assert_eq!(a_trace.len(), 32);
        assert_eq!(a.follows_span_ids, None);
        // The next call answers both tool calls, and asks for another.
        let mut b = call(1, 200, &[9], &[7, 8]);
        t.observe(&mut b);
        assert_eq!(b.follows_span_ids, Some(vec![a_span.clone()]));
        assert_eq!(b.detail.links, vec![(a_trace.clone(), a_span.clone())]);
        assert_eq!(b.detail.trace_id.as_deref(), Some(a_trace.as_str()));
        assert_ne!(b.span_id, a.span_id);
        let mut c = call(1, 300, &[], &[9]);
        t.observe(&mut c);
        assert_eq!(
            c.follows_span_ids,
            Some(vec![b.span_id.clone().expect("present")])
        );
        assert_eq!(c.detail.trace_id.as_deref(), Some(a_trace.as_str()));
        // Another process with the same ids links to nothing.
        let mut other = call(2, 400, &[], &[7]);
        t.observe(&mut other);
        assert_eq!(other.follows_span_ids, None);
        assert_eq!(other.detail.trace_id, None);
        // A call with a trace of its own keeps it, and its tool calls are linked in it.
        let mut own = call(1, 500, &[11], &[]);
        own.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        t.observe(&mut own);
        let mut next = call(1, 600, &[], &[11]);
        t.observe(&mut next);
        assert_eq!(
            next.detail.links[0].0, "4bf92f3577b34da6a3ce929d0e0e4736",
            "the link names the trace the earlier span is in"
        );
    }

    #[test]
    fn an_id_names_its_first_call_and_a_servers_clients_are_apart() {
        let mut t = ToolChains::default();
        let mut a = call(1, 100, &[7], &[]);
        t.observe(&mut a);
        // Another call reusing the id cannot take the link over.
        let mut thief = call(1, 150, &[7], &[]);
        t.observe(&mut thief);
        let mut b = call(1, 200, &[], &[7]);
        t.observe(&mut b);
        assert_eq!(
            b.follows_span_ids,
            Some(vec![a.span_id.clone().expect("present")])
        );
        // Server role: the calls of one peer address link, another peer's do not.
        let server = |start: i64, peer: &str, made: &[u64], answers: &[u64]| {
            let mut c = call(5, start, made, answers);
            c.role = "server";
            c.peer_addr = Some(peer.into());
            c
        };
        let mut s1 = server(100, "10.0.0.1:5000", &[9], &[]);
        t.observe(&mut s1);
        let mut other = server(200, "10.0.0.2:5000", &[], &[9]);
        t.observe(&mut other);
        assert_eq!(other.follows_span_ids, None);
        let mut same = server(300, "10.0.0.1:6111", &[], &[9]);
        t.observe(&mut same);
        assert_eq!(
            same.follows_span_ids,
            Some(vec![s1.span_id.clone().expect("present")])
        );
        // Two calls alike in every field still get two span ids.
        let mut x = call(3, 1, &[], &[]);
        let mut y = x.clone();
        t.observe(&mut x);
        t.observe(&mut y);
        assert_ne!(x.span_id, y.span_id);
    }

    #[test]
    fn span_ids_are_stable_and_a_fixed_one_is_kept() {
        let mut t = ToolChains::default();
        let mut a = call(1, 100, &[], &[]);
        let mut a2 = a.clone();
        t.observe(&mut a);
        ToolChains::default().observe(&mut a2);
        assert_eq!(a.span_id, a2.span_id);
        let mut g = call(1, 100, &[], &[]);
        g.detail.span_id = Some("00f067aa0ba902b7".into());
        t.observe(&mut g);
        assert_eq!(g.span_id.as_deref(), Some("00f067aa0ba902b7"));
    }

    #[test]
    fn bounded_per_process_and_in_all() {
        let mut t = ToolChains::default();
        let ids: Vec<u64> = (0..(MAX_PER_PROCESS as u64 + 10)).collect();
        let mut flood = call(1, 1, &ids, &[]);
        t.observe(&mut flood);
        assert_eq!(t.len(), MAX_PER_PROCESS);
        assert_eq!(t.evicted, 10);
        // The oldest went: the first ids link to nothing, the last ones do.
        let mut b = call(1, 2, &[], &[0]);
        t.observe(&mut b);
        assert_eq!(b.follows_span_ids, None);
        let mut b = call(1, 3, &[], &[MAX_PER_PROCESS as u64 + 9]);
        t.observe(&mut b);
        assert!(b.follows_span_ids.is_some());
        // Many processes: never more than the total; a quiet process keeps its ids while the
        // biggest holders give theirs up.
        let mut quiet = call(9999, 1, &[42], &[]);
        t.observe(&mut quiet);
        for pid in 100..(100 + (MAX_ENTRIES / MAX_PER_PROCESS) as u32 + 2) {
            let mut f = call(pid, 1, &ids, &[]);
            t.observe(&mut f);
            assert!(t.len() <= MAX_ENTRIES);
        }
        let mut answer = call(9999, 2, &[], &[42]);
        t.observe(&mut answer);
        assert!(answer.follows_span_ids.is_some());
    }
}
