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
//! the same process and role; the index holds at most [`MAX_ENTRIES`] ids in all and
//! [`MAX_PER_PROCESS`] per process (a process past its share forgets its own oldest ids first;
//! with the index full, the biggest holder's oldest go), every eviction counted.

use std::collections::{HashMap, VecDeque};

use super::LlmCall;

/// Most tool-call ids held in all.
pub const MAX_ENTRIES: usize = 16384;
/// Most tool-call ids held for one process (and role).
pub const MAX_PER_PROCESS: usize = 2048;
/// Most links one call gets (distinct earlier calls).
pub const MAX_LINKS: usize = 16;

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
    procs: HashMap<(u32, &'static str), Process>,
    total: usize,
    /// Ids forgotten to stay in bounds.
    pub evicted: u64,
}

/// A keyed hex id of `bytes` hex digits (16 or 32) for `call` in `domain`.
fn call_id(call: &LlmCall, domain: &str, digits: usize) -> String {
    let mut material = Vec::with_capacity(64 + call.http_path.len());
    material.extend_from_slice(&call.pid.to_le_bytes());
    material.extend_from_slice(call.role.as_bytes());
    material.extend_from_slice(&call.detail.start_unix_ns.to_le_bytes());
    material.extend_from_slice(&call.detail.end_unix_ns.to_le_bytes());
    material.extend_from_slice(call.http_path.as_bytes());
    material.extend_from_slice(call.request_id.as_deref().unwrap_or("").as_bytes());
    let key = crate::ids::key();
    let mut out = key.id(domain, &material);
    if digits > 16 {
        out.push_str(&key.id(&format!("{domain}.2"), &material));
    }
    out
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
        let span = call
            .detail
            .span_id
            .clone()
            .unwrap_or_else(|| call_id(call, "span", 16));
        call.detail.span_id = Some(span.clone());
        call.span_id = Some(span.clone());
        let key = (call.pid, call.role);

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
                let t = call_id(call, "trace", 32);
                call.detail.trace_id = Some(t.clone());
                t
            }
        };
        let target = Target { trace, span };
        for id in std::mem::take(&mut call.detail.tool_call_ids) {
            self.insert(key, id, target.clone());
        }
    }

    fn insert(&mut self, key: (u32, &'static str), id: u64, target: Target) {
        let p = self.procs.entry(key).or_default();
        if p.ids.insert(id, target).is_some() {
            return;
        }
        p.order.push_back(id);
        self.total += 1;
        if p.ids.len() > MAX_PER_PROCESS && p.evict_oldest() {
            self.total -= 1;
            self.evicted += 1;
        }
        while self.total > MAX_ENTRIES {
            // The biggest holder's oldest id goes.
            let Some(big) = self
                .procs
                .iter()
                .max_by_key(|(_, p)| p.ids.len())
                .map(|(k, _)| *k)
            else {
                break;
            };
            let Some(p) = self.procs.get_mut(&big) else {
                break;
            };
            if !p.evict_oldest() {
                break;
            }
            self.total -= 1;
            self.evicted += 1;
            if p.ids.is_empty() {
                self.procs.remove(&big);
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
        let a_span = a.span_id.clone().unwrap();
        assert_eq!(a_span.len(), 16);
        let a_trace = a.detail.trace_id.clone().unwrap();
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
        assert_eq!(c.follows_span_ids, Some(vec![b.span_id.clone().unwrap()]));
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
