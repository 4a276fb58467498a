//! Conversations: which calls belong together, read from the wire, with no text kept.
//!
//! Two halves, both pure:
//!
//! * **Reading a request** (track stage, inside the exchange, from the request body's one parse
//!   and the request head): [`ConversationKeys`] holds only keyed hashes
//!   ([`crate::ids`]): an explicit conversation id ([`read_request`], [`header_id`]), an end user,
//!   a Responses `previous_response_id`, the call's own response id, and the cumulative hashes of
//!   the message history's last [`PREFIXES_KEPT`] prefixes. A message is hashed from its JSON
//!   value with object keys sorted and only string leaves kept (numbers, nulls, empty arrays and
//!   `cache_control` are left out), so a client that re-serialises the same history (key order,
//!   whitespace, `"refusal": null`) gives the same hashes. At most [`MAX_MESSAGES`] messages are
//!   hashed; a longer history is not followed. Raw values never leave the exchange.
//!
//!   Explicit ids, most specific first: what the dialect set ([`super::Observed::conversation`],
//!   Dify), Responses `conversation` (a string or `{id}`), `metadata.conversation_id` /
//!   `thread_id` / `chat_id`, then the request headers `x-conversation-id`, `conversation-id`,
//!   `x-thread-id`, `x-chat-id`. End users: OpenAI `user`, `safety_identifier`, Anthropic
//!   `metadata.user_id` (and the dialect's). Names with a secret word (`session`, `key`:
//!   `x-session-id`, `metadata.session_id`, `prompt_cache_key`) are masked by the secret policy
//!   before any stage sees them, so they are never read; a value that is all mask bytes is
//!   ignored. `x-request-id`, `x-client-request-id`, `idempotency-key` and `traceparent` name
//!   one request, not a conversation.
//!
//! * **Matching records** ([`Matcher`], enrich stage, records in end order, ticks every 500 ms):
//!   an explicit id names its conversation; a `previous_response_id` continues the conversation
//!   of the call whose response id it names (a bounded map); otherwise, per (process, server,
//!   end user), a request whose history extends a history sent before continues that
//!   conversation, and the same history sent again is a regeneration (same turn). A conversation
//!   idle for `--conversation-idle` ends: its turns and tokens are observed, and it was
//!   abandoned when its last call aborted or failed. A record's `conversation_source` says how
//!   that call was matched (`history` for a call that continues an explicit conversation by its
//!   history alone). Client-role and server-role calls are followed apart (a gateway forwards
//!   the ids it receives): one id, two conversations, each observed under its `role`.
//!
//! Memory: at most [`MAX_CONVERSATIONS`] conversations, [`MAX_PER_PROCESS`] per process, each
//! with at most [`HISTORIES_PER_CONVERSATION`] histories and [`RESPONSES_PER_CONVERSATION`]
//! response ids indexed: a process that sends endless distinct histories only evicts its own
//! least recently used conversations (then the node's oldest); every eviction is counted
//! ([`Matcher::evicted`], `conversation_evicted`) and an evicted conversation is not observed.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::Value;

use super::LlmCall;
use crate::protocol::http1::RequestHead;

/// Most messages of one request hashed; a longer history is not followed.
pub const MAX_MESSAGES: usize = 4096;
/// Prefix hashes kept per request (the longest ones): how far back a continuation is found.
pub const PREFIXES_KEPT: usize = 64;
/// Conversations held in all.
pub const MAX_CONVERSATIONS: usize = 8192;

/// `--conversation-idle`'s default: a conversation with no call for 30 minutes has ended.
pub const DEFAULT_IDLE: std::time::Duration = std::time::Duration::from_secs(1800);
/// Conversations held per process.
pub const MAX_PER_PROCESS: usize = 1024;
/// Histories of one conversation indexed (its latest calls): regenerations and continuations
/// of older turns past these start a new conversation.
pub const HISTORIES_PER_CONVERSATION: usize = 8;
/// Response ids of one conversation indexed (for `previous_response_id`).
pub const RESPONSES_PER_CONVERSATION: usize = 4;
/// Deepest JSON nesting walked inside one message.
const MAX_DEPTH: usize = 32;

/// Request headers that carry a conversation id, and the source each gives.
pub const CONVERSATION_HEADERS: &[(&str, &str)] = &[
    ("x-conversation-id", "header.x-conversation-id"),
    ("conversation-id", "header.conversation-id"),
    ("x-thread-id", "header.x-thread-id"),
    ("x-chat-id", "header.x-chat-id"),
];

/// `metadata` keys that carry a conversation id, and the source each gives.
const METADATA_KEYS: &[(&str, &str)] = &[
    ("conversation_id", "openai.metadata.conversation_id"),
    ("thread_id", "openai.metadata.thread_id"),
    ("chat_id", "openai.metadata.chat_id"),
];

/// Longest explicit id value read, bytes (longer values are ignored).
const MAX_ID_BYTES: usize = 512;

/// What a call carried about its conversation: keyed hashes only (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationKeys {
    /// An explicit conversation id: its source and keyed hash.
    pub explicit: Option<(&'static str, u64)>,
    /// A conversation id from a request header (used when the body names none).
    pub header: Option<(&'static str, u64)>,
    /// The end user's keyed hash.
    pub end_user: Option<u64>,
    /// Responses `previous_response_id`, hashed.
    pub previous_response: Option<u64>,
    /// This call's response id, hashed.
    pub response: Option<u64>,
    /// (messages, cumulative hash) of the history's longest prefixes, shortest first; the last
    /// is the whole history. Empty: no history (or too long to follow).
    pub history: Vec<(u32, u64)>,
}

/// A usable id value: a non-empty string of bounded length that the masker did not mask.
fn id_value(v: Option<&Value>) -> Option<&str> {
    let s = v?.as_str()?;
    (!s.is_empty() && s.len() <= MAX_ID_BYTES && !s.bytes().all(|b| b == crate::secrets::MASK))
        .then_some(s)
}

/// The keyed hash of an explicit id value (conversation ids share one domain, whatever their
/// source, so the same id read from two places is one conversation).
pub fn conversation_hash(value: &str) -> u64 {
    crate::ids::key().id_u64("conversation", value.as_bytes())
}

fn end_user_hash(value: &str) -> u64 {
    crate::ids::key().id_u64("end_user", value.as_bytes())
}

fn response_hash(value: &str) -> u64 {
    crate::ids::key().id_u64("response_id", value.as_bytes())
}

/// The conversation id a request head carries ([`CONVERSATION_HEADERS`]).
pub fn header_id(head: &RequestHead) -> Option<(&'static str, u64)> {
    CONVERSATION_HEADERS.iter().find_map(|(name, source)| {
        let v = head.header(name)?.trim();
        (!v.is_empty() && v.len() <= MAX_ID_BYTES && !v.bytes().all(|b| b == crate::secrets::MASK))
            .then(|| (*source, conversation_hash(v)))
    })
}

/// Reads a request body's explicit ids and message history into `keys`.
pub fn read_request(v: &Value, keys: &mut ConversationKeys) {
    let Some(obj) = v.as_object() else {
        return;
    };
    // Responses `conversation`: "conv_..." or {"id": "conv_..."}.
    let conv = obj.get("conversation");
    if let Some(id) = id_value(conv).or_else(|| id_value(conv.and_then(|c| c.get("id")))) {
        keys.explicit = Some(("openai.conversation", conversation_hash(id)));
    }
    let metadata = obj.get("metadata");
    if keys.explicit.is_none() {
        keys.explicit = METADATA_KEYS.iter().find_map(|(k, source)| {
            id_value(metadata.and_then(|m| m.get(*k))).map(|id| (*source, conversation_hash(id)))
        });
    }
    if let Some(r) = id_value(obj.get("previous_response_id")) {
        keys.previous_response = Some(response_hash(r));
    }
    let user = id_value(obj.get("user"))
        .or_else(|| id_value(obj.get("safety_identifier")))
        .or_else(|| id_value(metadata.and_then(|m| m.get("user_id"))));
    if let Some(u) = user {
        keys.end_user = Some(end_user_hash(u));
    }
    keys.history = history_hashes(obj);
}

/// The history's messages in order: system text first (`system`, `instructions`,
/// `systemInstruction`), then `messages` (chat, Anthropic, Ollama; DashScope's
/// `input.messages`), `contents` (Gemini) or `input` (Responses: a string is one message).
fn history_hashes(obj: &serde_json::Map<String, Value>) -> Vec<(u32, u64)> {
    let mut msgs: Vec<(&str, &Value)> = Vec::new();
    for k in ["system", "instructions", "systemInstruction"] {
        if let Some(v) = obj.get(k).filter(|v| !v.is_null()) {
            msgs.push((k, v));
        }
    }
    let list = obj
        .get("messages")
        .or_else(|| obj.get("contents"))
        .or_else(|| obj.get("input").and_then(|i| i.get("messages")))
        .or_else(|| obj.get("input"));
    let before = msgs.len();
    match list {
        Some(Value::Array(items)) => {
            if items.len() + before > MAX_MESSAGES {
                return Vec::new();
            }
            msgs.extend(items.iter().map(|m| ("message", m)));
        }
        Some(s @ Value::String(_)) => msgs.push(("message", s)),
        _ => {}
    }
    if msgs.len() == before {
        // No conversation without messages (embeddings, legacy completions).
        return Vec::new();
    }
    // One keyed hasher over the whole history; its state after message i is prefix i's hash.
    let mut h = blake3::Hasher::new_keyed(history_key());
    let n = msgs.len();
    let mut out = Vec::with_capacity(n.min(PREFIXES_KEPT));
    for (i, (kind, m)) in msgs.into_iter().enumerate() {
        put(&mut h, 0, kind.as_bytes());
        canonical_strings(m, "", 0, &mut h);
        h.update(&[4]);
        if i + PREFIXES_KEPT >= n {
            let d = h.finalize();
            let v = u64::from_le_bytes(d.as_bytes()[..8].try_into().expect("8 bytes"));
            out.push(((i + 1) as u32, v));
        }
    }
    out
}

/// The history hasher's key, derived once from the id key (the prefix hashes never leave the
/// agent; keyed all the same, so nobody can precompute collisions).
fn history_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        for (i, part) in k.chunks_mut(8).enumerate() {
            let v = crate::ids::key().id_u64("conversation.history.key", &[i as u8]);
            part.copy_from_slice(&v.to_le_bytes());
        }
        k
    })
}

/// A tagged, length-prefixed piece: no two different walks give the same bytes.
fn put(h: &mut blake3::Hasher, tag: u8, bytes: &[u8]) {
    h.update(&[tag]);
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Hashes a message's string leaves with their keys, object keys in order: the same message
/// re-serialised (key order, whitespace, escapes, null or empty fields) hashes the same.
fn canonical_strings(v: &Value, key: &str, depth: usize, h: &mut blake3::Hasher) {
    if depth > MAX_DEPTH {
        return;
    }
    match v {
        Value::String(s) => {
            put(h, 1, key.as_bytes());
            put(h, 1, s.as_bytes());
        }
        Value::Array(a) => {
            h.update(&[2]);
            for x in a {
                canonical_strings(x, key, depth + 1, h);
            }
            h.update(&[3]);
        }
        Value::Object(m) => {
            // serde_json's map iterates in key order (no `preserve_order`); sorted here only
            // if that ever changes.
            if m.keys().is_sorted() {
                for (k, x) in m.iter().filter(|(k, _)| *k != "cache_control") {
                    canonical_strings(x, k, depth + 1, h);
                }
            } else {
                let mut keys: Vec<&String> = m.keys().filter(|k| *k != "cache_control").collect();
                keys.sort_unstable();
                for k in keys {
                    canonical_strings(&m[k.as_str()], k, depth + 1, h);
                }
            }
        }
        _ => {}
    }
}

impl ConversationKeys {
    /// Adds what the dialect and the response told: a dialect's explicit id and end user win
    /// over the body's generic readings; the header is the last resort.
    pub fn resolve(
        &mut self,
        dialect_conversation: Option<&(&'static str, String)>,
        dialect_end_user: Option<&str>,
        response_id: Option<&str>,
    ) {
        if let Some((source, v)) = dialect_conversation.filter(|(_, v)| !v.is_empty()) {
            self.explicit = Some((source, conversation_hash(v)));
        }
        if self.explicit.is_none() {
            self.explicit = self.header.take();
        }
        if let Some(u) = dialect_end_user.filter(|u| !u.is_empty()) {
            self.end_user = Some(end_user_hash(u));
        }
        if let Some(r) = response_id.filter(|r| !r.is_empty()) {
            self.response = Some(response_hash(r));
        }
    }
}

/// How the matcher is bounded and when a conversation ends.
#[derive(Debug, Clone, Copy)]
pub struct MatcherConfig {
    /// A conversation with no call for this long has ended, ns.
    pub idle_ns: i64,
    /// Conversations held in all.
    pub max_total: usize,
    /// Conversations held per process.
    pub max_per_process: usize,
}

impl MatcherConfig {
    /// The default bounds with the given idle time.
    pub fn with_idle(idle: std::time::Duration) -> Self {
        MatcherConfig {
            idle_ns: i64::try_from(idle.as_nanos()).unwrap_or(i64::MAX),
            max_total: MAX_CONVERSATIONS,
            max_per_process: MAX_PER_PROCESS,
        }
    }
}

/// A conversation that ended (idle), for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// `client` or `server`: the role of its calls.
    pub role: &'static str,
    /// Provider of its last call.
    pub provider: String,
    /// Turns (calls, regenerations not counted).
    pub turns: u32,
    /// Input plus output tokens of all its calls.
    pub tokens: u64,
    /// Its last call aborted or failed.
    pub abandoned: bool,
}

/// What matching one call found, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Matched {
    /// The call was a regeneration.
    pub regeneration: bool,
}

struct Conv {
    id: u64,
    role: &'static str,
    pid: u32,
    provider: String,
    turns: u32,
    tokens: u64,
    last_ns: i64,
    seq: u64,
    last_failed: bool,
    /// Index keys of its histories (with the turn they ended), oldest first.
    histories: VecDeque<(u64, u32)>,
    /// The last history it was sent (explicit conversations: regenerations).
    last_history: Option<u64>,
    responses: VecDeque<u64>,
}

/// See the module docs.
pub struct Matcher {
    cfg: MatcherConfig,
    convs: HashMap<u64, Conv>,
    /// Least recently used first: seq → conversation key.
    lru: BTreeMap<u64, u64>,
    /// Per process, least recently used first.
    procs: HashMap<u32, BTreeMap<u64, u64>>,
    /// (scope, history) → conversation key.
    histories: HashMap<u64, u64>,
    /// Response id → conversation key.
    responses: HashMap<u64, u64>,
    seq: u64,
    /// Conversations evicted to stay in bounds (never observed).
    pub evicted: u64,
}

fn mix(parts: &[u64]) -> u64 {
    let mut buf = Vec::with_capacity(parts.len() * 8);
    for p in parts {
        buf.extend_from_slice(&p.to_le_bytes());
    }
    crate::ids::key().id_u64("conversation.scope", &buf)
}

impl Matcher {
    /// An empty matcher.
    pub fn new(cfg: MatcherConfig) -> Self {
        Matcher {
            cfg,
            convs: HashMap::new(),
            lru: BTreeMap::new(),
            procs: HashMap::new(),
            histories: HashMap::new(),
            responses: HashMap::new(),
            seq: 0,
            evicted: 0,
        }
    }

    /// Conversations held.
    pub fn len(&self) -> usize {
        self.convs.len()
    }

    /// No conversation held.
    pub fn is_empty(&self) -> bool {
        self.convs.is_empty()
    }

    /// Index entries held (histories and response ids), for the bound's tests.
    pub fn index_len(&self) -> usize {
        self.histories.len() + self.responses.len()
    }

    /// Gives the call its conversation fields (the keys it carries on `detail.conversation` are
    /// taken: nothing is kept on the record). A call with neither an explicit id nor a history
    /// gets none.
    pub fn observe(&mut self, call: &mut LlmCall) -> Option<Matched> {
        let keys = std::mem::take(&mut call.detail.conversation);
        let now = call.detail.end_unix_ns;
        let scope = mix(&[
            u64::from(call.pid),
            crate::ids::key().id_u64(
                "conversation.server",
                format!(
                    "{}:{}",
                    call.server_address.as_deref().unwrap_or(""),
                    call.server_port.unwrap_or(0)
                )
                .as_bytes(),
            ),
            keys.end_user.unwrap_or(0),
        ]);
        let full = keys.history.last().map(|&(_, h)| mix(&[scope, h]));
        // Both ends of a call on one node (a gateway's server-role call and the upstream call it
        // makes with the same ids) are two conversations, each counted once per role.
        let role = u64::from(call.role == "server");
        // Explicit ids and response ids are followed within one container (or the host) and
        // server: several worker processes of one app continue each other's conversations, but
        // a process elsewhere that sends a guessed id ("default", "1") or a response id it
        // learned cannot join, and so cannot change, another app's conversation.
        let shared = mix(&[
            role,
            crate::ids::key().id_u64(
                "conversation.shared_scope",
                format!(
                    "{}\0{}:{}",
                    call.container_id.as_deref().unwrap_or(""),
                    call.server_address.as_deref().unwrap_or(""),
                    call.server_port.unwrap_or(0)
                )
                .as_bytes(),
            ),
        ]);
        let response = keys.response.map(|r| mix(&[r, shared]));
        // Which conversation, its source, and whether it is new or a regeneration.
        let (key, source, regeneration, turn_hint) = if let Some((source, h)) = keys.explicit {
            let key = mix(&[h, shared]);
            let regen = self
                .convs
                .get(&key)
                .is_some_and(|c| c.last_history.is_some() && c.last_history == full);
            (key, source, regen, None)
        } else if let Some(r) = keys.previous_response {
            let r = mix(&[r, shared]);
            let key = self.responses.get(&r).copied().unwrap_or(r);
            (key, "openai.previous_response_id", false, None)
        } else if let Some(full) = full {
            if let Some(&k) = self.histories.get(&full) {
                let turn = self.convs.get(&k).and_then(|c| {
                    c.histories
                        .iter()
                        .find(|(hk, _)| *hk == full)
                        .map(|&(_, t)| t)
                });
                (k, "history", true, turn)
            } else {
                let n = keys.history.last().map_or(0, |&(n, _)| n);
                let found = keys
                    .history
                    .iter()
                    .rev()
                    .filter(|&&(len, _)| len < n)
                    .find_map(|&(_, h)| {
                        let hk = mix(&[scope, h]);
                        let k = *self.histories.get(&hk)?;
                        let t = self
                            .convs
                            .get(&k)?
                            .histories
                            .iter()
                            .find(|(x, _)| *x == hk)?
                            .1;
                        Some((k, t + 1))
                    });
                match found {
                    Some((k, t)) => (k, "history", false, Some(t)),
                    None => (mix(&[full, now as u64]), "history", false, Some(1)),
                }
            }
        } else {
            return None;
        };
        if !self.convs.contains_key(&key) {
            self.make_room(call.pid);
            self.convs.insert(
                key,
                Conv {
                    // An explicit id is exported as itself; otherwise the key names it.
                    id: keys.explicit.map_or(key, |(_, h)| h),
                    role: call.role,
                    pid: call.pid,
                    provider: String::new(),
                    turns: 0,
                    tokens: 0,
                    last_ns: now,
                    seq: 0,
                    last_failed: false,
                    histories: VecDeque::new(),
                    last_history: None,
                    responses: VecDeque::new(),
                },
            );
            self.procs.entry(call.pid).or_default();
        }
        self.seq += 1;
        let seq = self.seq;
        let conv = self.convs.get_mut(&key).expect("inserted above");
        let turn = if regeneration {
            turn_hint.unwrap_or(conv.turns.max(1))
        } else {
            turn_hint.unwrap_or(conv.turns + 1)
        };
        conv.turns = conv.turns.max(turn);
        conv.tokens = conv
            .tokens
            .saturating_add(call.input_tokens.unwrap_or(0))
            .saturating_add(call.output_tokens.unwrap_or(0));
        conv.last_ns = conv.last_ns.max(now);
        conv.last_failed = call.aborted || call.error_type.is_some();
        if conv.provider != call.provider {
            conv.provider.clone_from(&call.provider);
        }
        // Least recently used order.
        let old_seq = std::mem::replace(&mut conv.seq, seq);
        let pid = conv.pid;
        let mut dropped_keys = Vec::new();
        if let Some(full) = full {
            conv.last_history = Some(full);
            if let Some(entry) = conv.histories.iter_mut().find(|(h, _)| *h == full) {
                entry.1 = turn;
            } else {
                conv.histories.push_back((full, turn));
                if conv.histories.len() > HISTORIES_PER_CONVERSATION
                    && let Some((old, _)) = conv.histories.pop_front()
                {
                    dropped_keys.push(old);
                }
                self.histories.insert(full, key);
            }
        }
        let mut dropped_responses = Vec::new();
        if let Some(r) = response {
            conv.responses.push_back(r);
            if conv.responses.len() > RESPONSES_PER_CONVERSATION
                && let Some(old) = conv.responses.pop_front()
            {
                dropped_responses.push(old);
            }
            self.responses.insert(r, key);
        }
        call.conversation_id = Some(crate::ids::hex_id(conv.id));
        call.conversation_source = Some(source);
        call.turn = Some(turn);
        call.regeneration = Some(regeneration);
        for h in dropped_keys {
            if self.histories.get(&h) == Some(&key) {
                self.histories.remove(&h);
            }
        }
        for r in dropped_responses {
            if self.responses.get(&r) == Some(&key) {
                self.responses.remove(&r);
            }
        }
        self.lru.remove(&old_seq);
        self.lru.insert(seq, key);
        let p = self.procs.entry(pid).or_default();
        p.remove(&old_seq);
        p.insert(seq, key);
        Some(Matched { regeneration })
    }

    /// Before a new conversation of `pid`: evicts that process's least recently used one when
    /// it holds its share, else the node's when all are held.
    fn make_room(&mut self, pid: u32) {
        let victim = match self.procs.get(&pid) {
            Some(p) if p.len() >= self.cfg.max_per_process => p.first_key_value().map(|(_, &k)| k),
            _ if self.convs.len() >= self.cfg.max_total => self.biggest_holders_oldest(),
            _ => None,
        };
        if let Some(k) = victim {
            self.remove(k);
            self.evicted += 1;
        }
    }

    /// With the table full: the least recently used conversation of the process holding the
    /// most (the oldest among equal holders). Processes that send endless distinct histories
    /// (several of them, each under its own cap) then evict each other's, not the conversations
    /// of a process holding few; with equal shares it is the least recently used overall.
    fn biggest_holders_oldest(&self) -> Option<u64> {
        self.procs
            .values()
            .filter_map(|p| p.first_key_value().map(|(&seq, &k)| (p.len(), seq, k)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, _, k)| k)
    }

    fn remove(&mut self, key: u64) -> Option<Conv> {
        let conv = self.convs.remove(&key)?;
        self.lru.remove(&conv.seq);
        if let Some(p) = self.procs.get_mut(&conv.pid) {
            p.remove(&conv.seq);
            if p.is_empty() {
                self.procs.remove(&conv.pid);
            }
        }
        for (h, _) in &conv.histories {
            if self.histories.get(h) == Some(&key) {
                self.histories.remove(h);
            }
        }
        for r in &conv.responses {
            if self.responses.get(r) == Some(&key) {
                self.responses.remove(r);
            }
        }
        Some(conv)
    }

    /// Ends the conversations idle since `now - idle` (Unix ns, the pipeline's clock).
    pub fn expire(&mut self, now: i64) -> Vec<Ended> {
        let mut ended = Vec::new();
        let deadline = now.saturating_sub(self.cfg.idle_ns);
        while let Some((_, &k)) = self.lru.first_key_value() {
            let idle = self.convs.get(&k).is_none_or(|c| c.last_ns <= deadline);
            if !idle {
                break;
            }
            match self.remove(k) {
                Some(c) => ended.push(Ended {
                    role: c.role,
                    provider: c.provider,
                    turns: c.turns,
                    tokens: c.tokens,
                    abandoned: c.last_failed,
                }),
                None => {
                    // Not held: a stale order entry.
                    let first = self.lru.first_key_value().map(|(&s, _)| s);
                    if let Some(s) = first {
                        self.lru.remove(&s);
                    }
                }
            }
        }
        ended
    }
}

/// A record to match, for tests of the stages that use the matcher.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::LlmCall;

    /// A client call to `127.0.0.1:8000` with 10 input and 5 output tokens.
    pub(crate) fn call() -> LlmCall {
        super::tests::call(0, 0, Default::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys_of(body: Value) -> ConversationKeys {
        let mut k = ConversationKeys::default();
        read_request(&body, &mut k);
        k.resolve(None, None, None);
        k
    }

    pub(super) fn call(pid: u32, end_s: i64, keys: ConversationKeys) -> LlmCall {
        let mut c = LlmCall {
            start_time: "2026-01-01T00:00:00.000000Z".into(),
            end_time: "2026-01-01T00:00:01.000000Z".into(),
            role: "client",
            pid,
            comm: "python".into(),
            tls: true,
            server_address: Some("127.0.0.1".into()),
            server_port: Some(8000),
            http_method: "POST".into(),
            http_path: "/v1/chat/completions".into(),
            http_status: Some(200),
            provider: "openai".into(),
            api: "openai.chat_completions",
            operation: "chat",
            request_model: Some("m".into()),
            stream: Some(true),
            input_tokens: Some(10),
            output_tokens: Some(5),
            duration_s: 1.0,
            ..Default::default()
        };
        c.detail.end_unix_ns = end_s * 1_000_000_000;
        c.detail.conversation = keys;
        c
    }

    fn chat(msgs: &[(&str, &str)]) -> ConversationKeys {
        let m: Vec<Value> = msgs
            .iter()
            .map(|(r, t)| json!({"role": r, "content": t}))
            .collect();
        keys_of(json!({"model": "m", "messages": m}))
    }

    const S: i64 = 1_000_000_000;

    fn matcher(idle_s: i64) -> Matcher {
        Matcher::new(MatcherConfig {
            idle_ns: idle_s * 1_000_000_000,
            max_total: MAX_CONVERSATIONS,
            max_per_process: MAX_PER_PROCESS,
        })
    }

    fn fields(c: &LlmCall) -> (String, &'static str, u32, bool) {
        (
            c.conversation_id.clone().expect("present"),
            c.conversation_source.expect("present"),
            c.turn.expect("present"),
            c.regeneration.expect("present"),
        )
    }

    #[test]
    fn hashes_survive_reserialisation_and_ignore_nulls() {
        let a = keys_of(json!({"messages": [{"role": "user", "content": "hi"}]}));
        let b: Value = serde_json::from_str(
            r#"{ "messages" : [ { "content":"h\u0069", "role":"user", "name": null,
                 "cache_control": {"type": "ephemeral"} } ], "model": "x" }"#,
        )
        .expect("present");
        assert_eq!(a.history, keys_of(b).history);
        assert_ne!(a.history, chat(&[("user", "ho")]).history);
        assert_ne!(a.history, chat(&[("system", "hi")]).history);
        // Prefixes: message i's cumulative hash is the same in a longer history.
        let long = chat(&[("user", "hi"), ("assistant", "yo"), ("user", "more")]);
        assert_eq!(long.history.len(), 3);
        assert_eq!(long.history[0], a.history[0]);
        // Anthropic system, Gemini contents, Responses input.
        let anth = keys_of(
            json!({"system": "be brief", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
        );
        assert_eq!(anth.history.len(), 2);
        let gem = keys_of(json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
        assert_eq!(gem.history.len(), 1);
        let resp = keys_of(json!({"model": "m", "input": "hi"}));
        assert_eq!(resp.history.len(), 1);
        // No messages: no history.
        assert!(
            keys_of(json!({"model": "m", "prompt": "hi"}))
                .history
                .is_empty()
        );
    }

    #[test]
    fn long_histories_keep_their_last_prefixes_and_huge_ones_are_not_followed() {
        let msgs: Vec<Value> = (0..200)
            .map(|i| json!({"role": "user", "content": i.to_string()}))
            .collect();
        let k = keys_of(json!({"messages": msgs}));
        assert_eq!(k.history.len(), PREFIXES_KEPT);
        assert_eq!(k.history.last().expect("present").0, 200);
        let msgs: Vec<Value> = (0..MAX_MESSAGES + 1)
            .map(|_| json!({"role": "user"}))
            .collect();
        assert!(keys_of(json!({"messages": msgs})).history.is_empty());
    }

    #[test]
    fn explicit_ids_and_end_users() {
        let k = keys_of(
            json!({"messages": [], "metadata": {"conversation_id": "c1", "user_id": "u"}, "user": "alice"}),
        );
        assert_eq!(
            k.explicit,
            Some(("openai.metadata.conversation_id", conversation_hash("c1")))
        );
        assert_eq!(k.end_user, Some(end_user_hash("alice")));
        let k = keys_of(json!({"conversation": {"id": "conv_1"}, "input": "x"}));
        assert_eq!(
            k.explicit,
            Some(("openai.conversation", conversation_hash("conv_1")))
        );
        let k = keys_of(json!({"metadata": {"user_id": "bob"}, "messages": []}));
        assert_eq!(k.end_user, Some(end_user_hash("bob")));
        // Masked by the secret policy: never read.
        let k = keys_of(json!({"metadata": {"conversation_id": "*****"}, "user": "***"}));
        assert_eq!((k.explicit, k.end_user), (None, None));
        // The dialect's id wins over the body's, the header is the last resort.
        let mut k = ConversationKeys {
            header: Some(("header.x-conversation-id", 7)),
            ..Default::default()
        };
        k.resolve(None, None, Some("resp_1"));
        assert_eq!(k.explicit, Some(("header.x-conversation-id", 7)));
        assert_eq!(k.response, Some(response_hash("resp_1")));
        let mut k = keys_of(json!({"metadata": {"thread_id": "t"}}));
        k.resolve(Some(&("dify.conversation_id", "d".into())), Some("u"), None);
        assert_eq!(
            k.explicit,
            Some(("dify.conversation_id", conversation_hash("d")))
        );
    }

    #[test]
    fn extends_and_interleaves() {
        let mut m = matcher(1800);
        let mut a1 = call(1, 1, chat(&[("system", "s"), ("user", "a")]));
        let mut b1 = call(1, 2, chat(&[("system", "s"), ("user", "b")]));
        let mut a2 = call(
            1,
            3,
            chat(&[
                ("system", "s"),
                ("user", "a"),
                ("assistant", "x"),
                ("user", "a2"),
            ]),
        );
        let mut b2 = call(
            1,
            4,
            chat(&[
                ("system", "s"),
                ("user", "b"),
                ("assistant", "y"),
                ("user", "b2"),
            ]),
        );
        let mut a3 = call(
            1,
            5,
            chat(&[
                ("system", "s"),
                ("user", "a"),
                ("assistant", "x"),
                ("user", "a2"),
                ("assistant", "z"),
                ("user", "a3"),
            ]),
        );
        for c in [&mut a1, &mut b1, &mut a2, &mut b2, &mut a3] {
            m.observe(c).expect("present");
        }
        let (ida, src, t1, r1) = fields(&a1);
        assert_eq!((src, t1, r1), ("history", 1, false));
        assert_eq!(ida.len(), 16);
        let (idb, _, _, _) = fields(&b1);
        assert_ne!(ida, idb);
        assert_eq!(fields(&a2), (ida.clone(), "history", 2, false));
        assert_eq!(fields(&b2), (idb, "history", 2, false));
        assert_eq!(fields(&a3), (ida, "history", 3, false));
        assert!(
            a3.detail.conversation.history.is_empty(),
            "the keys are taken"
        );
        // Another process with the same history is another conversation.
        let mut other = call(
            2,
            6,
            chat(&[
                ("system", "s"),
                ("user", "a"),
                ("assistant", "x"),
                ("user", "a2"),
            ]),
        );
        m.observe(&mut other);
        assert_eq!(fields(&other).2, 1);
    }

    #[test]
    fn regeneration_keeps_the_turn() {
        let mut m = matcher(1800);
        let mut c1 = call(1, 1, chat(&[("user", "a")]));
        let mut c2 = call(
            1,
            2,
            chat(&[("user", "a"), ("assistant", "x"), ("user", "b")]),
        );
        let mut c3 = call(
            1,
            3,
            chat(&[("user", "a"), ("assistant", "x"), ("user", "b")]),
        );
        m.observe(&mut c1);
        m.observe(&mut c2);
        assert_eq!(m.observe(&mut c3), Some(Matched { regeneration: true }));
        assert_eq!(fields(&c3), (fields(&c1).0, "history", 2, true));
        // The next turn extends it.
        let mut c4 = call(
            1,
            4,
            chat(&[
                ("user", "a"),
                ("assistant", "x2"),
                ("user", "b"),
                ("assistant", "y"),
                ("user", "c"),
            ]),
        );
        m.observe(&mut c4);
        // x2 differs from x: extends turn 1's history only through [user a].
        assert_eq!(fields(&c4).0, fields(&c1).0);
        assert_eq!(fields(&c4).2, 2);
        let mut c5 = call(
            1,
            5,
            chat(&[
                ("user", "a"),
                ("assistant", "x"),
                ("user", "b"),
                ("assistant", "y"),
                ("user", "c"),
            ]),
        );
        m.observe(&mut c5);
        assert_eq!(fields(&c5), (fields(&c1).0, "history", 3, false));
    }

    #[test]
    fn explicit_ids_join_within_a_container_never_across() {
        let mut m = matcher(1800);
        let explicit = Some(("header.x-conversation-id", conversation_hash("default")));
        let keys = |text: &str| {
            let mut k = chat(&[("user", text)]);
            k.explicit = explicit;
            k
        };
        // Two worker processes of one app (same container) continue one conversation.
        let mut a1 = call(1, 1, keys("a"));
        a1.container_id = Some("app".into());
        let mut a2 = call(2, 2, keys("b"));
        a2.container_id = Some("app".into());
        // Another container sending the same guessable id starts its own, and leaves the app's
        // turns alone.
        let mut x = call(3, 3, keys("c"));
        x.container_id = Some("other".into());
        let mut a3 = call(1, 4, keys("d"));
        a3.container_id = Some("app".into());
        for c in [&mut a1, &mut a2, &mut x, &mut a3] {
            m.observe(c);
        }
        assert_eq!((a1.turn, a2.turn, a3.turn), (Some(1), Some(2), Some(3)));
        assert_eq!(x.turn, Some(1));
    }

    #[test]
    fn explicit_ids_beat_history() {
        let mut m = matcher(1800);
        let mut k1 = chat(&[("user", "a")]);
        k1.explicit = Some(("openai.metadata.conversation_id", conversation_hash("c")));
        let mut k2 = chat(&[("user", "zzz")]);
        k2.explicit = k1.explicit;
        let mut c1 = call(1, 1, k1.clone());
        let mut c2 = call(1, 2, k2);
        let mut c3 = call(1, 3, k1);
        m.observe(&mut c1);
        m.observe(&mut c2);
        m.observe(&mut c3);
        let id = crate::ids::hex_id(conversation_hash("c"));
        assert_eq!(
            fields(&c1),
            (id.clone(), "openai.metadata.conversation_id", 1, false)
        );
        assert_eq!(
            fields(&c2),
            (id.clone(), "openai.metadata.conversation_id", 2, false)
        );
        assert_eq!(fields(&c3).2, 3, "not the last history: not a regeneration");
        // A call without the id whose history extends the conversation's (same process and
        // server) continues it, matched by history.
        let mut c4 = call(
            1,
            4,
            chat(&[("user", "a"), ("assistant", "x"), ("user", "b")]),
        );
        m.observe(&mut c4);
        assert_eq!(fields(&c4), (id, "history", 4, false));
    }

    #[test]
    fn previous_response_id_chains() {
        let mut m = matcher(1800);
        let mut k1 = keys_of(json!({"model": "m", "input": "hi"}));
        k1.resolve(None, None, Some("resp_1"));
        let mut k2 =
            keys_of(json!({"model": "m", "input": "more", "previous_response_id": "resp_1"}));
        k2.resolve(None, None, Some("resp_2"));
        let mut k3 =
            keys_of(json!({"model": "m", "input": "again", "previous_response_id": "resp_2"}));
        k3.resolve(None, None, Some("resp_3"));
        let (mut c1, mut c2, mut c3) = (call(1, 1, k1), call(1, 2, k2), call(1, 3, k3));
        m.observe(&mut c1);
        m.observe(&mut c2);
        m.observe(&mut c3);
        let id = fields(&c1).0;
        assert_eq!(fields(&c1).1, "history");
        assert_eq!(
            fields(&c2),
            (id.clone(), "openai.previous_response_id", 2, false)
        );
        assert_eq!(fields(&c3), (id, "openai.previous_response_id", 3, false));
        // An unknown previous response starts a conversation of its own.
        let mut k4 = keys_of(json!({"input": "x", "previous_response_id": "resp_unknown"}));
        k4.resolve(None, None, None);
        let mut c4 = call(1, 4, k4);
        m.observe(&mut c4);
        assert_eq!(fields(&c4).1, "openai.previous_response_id");
        assert_eq!(fields(&c4).2, 1);
    }

    #[test]
    fn memory_is_bounded_in_all_and_per_process_with_evictions_counted() {
        let mut m = Matcher::new(MatcherConfig {
            idle_ns: i64::MAX,
            max_total: 64,
            max_per_process: 16,
        });
        // A hostile process sends endless distinct histories.
        for i in 0..10_000 {
            let mut c = call(666, i, chat(&[("user", &i.to_string())]));
            m.observe(&mut c);
            assert!(m.len() <= 16);
        }
        assert_eq!(m.evicted, 10_000 - 16);
        assert!(m.index_len() <= 16 * (HISTORIES_PER_CONVERSATION + RESPONSES_PER_CONVERSATION));
        // Other processes keep their conversations: the hostile one evicts only its own.
        let mut good = call(1, 20_000, chat(&[("user", "mine")]));
        m.observe(&mut good);
        for i in 0..1000 {
            let mut c = call(666, 20_001 + i, chat(&[("user", &format!("x{i}"))]));
            m.observe(&mut c);
        }
        let mut good2 = call(
            1,
            30_000,
            chat(&[("user", "mine"), ("assistant", "r"), ("user", "more")]),
        );
        m.observe(&mut good2);
        assert_eq!(fields(&good2).0, fields(&good).0);
        assert_eq!(fields(&good2).2, 2);
        // Several hostile processes, each under its own cap, fill the table together: they
        // evict each other's conversations, not those of a process holding few.
        let mut m2 = Matcher::new(MatcherConfig {
            idle_ns: i64::MAX,
            max_total: 64,
            max_per_process: 16,
        });
        let mut quiet = call(2, 0, chat(&[("user", "quiet")]));
        m2.observe(&mut quiet);
        for i in 0..10_000 {
            let mut c = call(
                700 + (i % 8) as u32,
                1 + i,
                chat(&[("user", &i.to_string())]),
            );
            m2.observe(&mut c);
            assert!(m2.len() <= 64);
        }
        let mut quiet2 = call(
            2,
            20_000,
            chat(&[("user", "quiet"), ("assistant", "r"), ("user", "again")]),
        );
        m2.observe(&mut quiet2);
        assert_eq!(fields(&quiet2).0, fields(&quiet).0);
        assert_eq!(
            fields(&quiet2).2,
            2,
            "the quiet process's conversation went on"
        );
        // Many processes: the total bound holds, least recently used first.
        for p in 0..1000u32 {
            let mut c = call(10_000 + p, 40_000 + i64::from(p), chat(&[("user", "p")]));
            m.observe(&mut c);
            assert!(m.len() <= 64);
        }
        assert_eq!(m.len(), 64);
        assert!(m.index_len() <= 64 * (HISTORIES_PER_CONVERSATION + RESPONSES_PER_CONVERSATION));
        // One conversation's histories are bounded too.
        let mut m = matcher(1800);
        let mut msgs = vec![("user".to_string(), "0".to_string())];
        for i in 0..100 {
            let pairs: Vec<(&str, &str)> =
                msgs.iter().map(|(r, t)| (r.as_str(), t.as_str())).collect();
            let mut c = call(1, i, chat(&pairs));
            m.observe(&mut c);
            assert_eq!(c.turn, Some(i as u32 + 1));
            msgs.push(("assistant".into(), format!("a{i}")));
            msgs.push(("user".into(), format!("u{i}")));
        }
        assert_eq!(m.len(), 1);
        assert!(m.index_len() <= HISTORIES_PER_CONVERSATION);
    }

    #[test]
    fn idle_conversations_end_and_abandonment_is_the_last_call_failing() {
        let mut m = matcher(10);
        let mut a1 = call(1, 1, chat(&[("user", "a")]));
        let mut a2 = call(
            1,
            2,
            chat(&[("user", "a"), ("assistant", "x"), ("user", "b")]),
        );
        a2.aborted = true;
        let mut b1 = call(1, 5, chat(&[("user", "b")]));
        b1.error_type = Some("500".into());
        let mut b2 = call(1, 6, chat(&[("user", "b")]));
        let mut c1 = call(1, 8, chat(&[("user", "c")]));
        c1.error_type = Some("429".into());
        for c in [&mut a1, &mut a2, &mut b1, &mut b2, &mut c1] {
            m.observe(c);
        }
        assert!(b2.regeneration.expect("present"));
        assert!(
            m.expire(11 * S).is_empty(),
            "a's last call ended at 2 s: idle until 12 s"
        );
        let ended = m.expire(12 * S);
        assert_eq!(
            ended,
            vec![Ended {
                role: "client",
                provider: "openai".into(),
                turns: 2,
                tokens: 30,
                abandoned: true
            }]
        );
        // b's regeneration succeeded after the error: not abandoned.
        let ended = m.expire(100 * S);
        assert_eq!(ended.len(), 2);
        assert_eq!((ended[0].turns, ended[0].abandoned), (1, false));
        assert_eq!((ended[1].turns, ended[1].abandoned), (1, true));
        assert!(m.is_empty());
        assert_eq!(m.index_len(), 0);
        // A conversation that ended starts again as a new one.
        let mut a3 = call(
            1,
            200,
            chat(&[
                ("user", "a"),
                ("assistant", "x"),
                ("user", "b"),
                ("assistant", "y"),
                ("user", "c"),
            ]),
        );
        m.observe(&mut a3);
        assert_eq!(a3.turn, Some(1));
    }

    #[test]
    fn both_ends_of_a_gateway_are_two_conversations_with_one_id() {
        let mut m = matcher(1800);
        let mut k = chat(&[("user", "a")]);
        k.explicit = Some(("openai.metadata.conversation_id", conversation_hash("g")));
        let mut k2 = k.clone();
        k2.history = chat(&[("user", "a"), ("assistant", "x"), ("user", "b")]).history;
        let mut server = call(1, 1, k.clone());
        server.role = "server";
        let mut client = call(1, 2, k);
        let mut server2 = call(1, 3, k2.clone());
        server2.role = "server";
        let mut client2 = call(1, 4, k2);
        for c in [&mut server, &mut client, &mut server2, &mut client2] {
            m.observe(c);
        }
        assert_eq!(m.len(), 2);
        assert_eq!(fields(&server).0, fields(&client).0);
        assert_eq!((fields(&server2).2, fields(&client2).2), (2, 2));
        let ended = m.expire(i64::MAX);
        assert_eq!(
            ended.iter().map(|e| (e.role, e.turns)).collect::<Vec<_>>(),
            [("server", 2), ("client", 2)]
        );
    }

    /// Cost of reading a request and matching its call, printed (`--ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_per_request() {
        for n in [1usize, 10, 100] {
            let msgs: Vec<Value> = (0..n)
                .map(|i| {
                    json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
                    "content": format!("message {i} ").repeat(40)})
                })
                .collect();
            let body = json!({"model": "m", "messages": msgs, "user": "u"});
            let runs = 2000;
            let t = std::time::Instant::now();
            for _ in 0..runs {
                std::hint::black_box(keys_of(std::hint::black_box(body.clone())));
            }
            let read = t.elapsed().as_secs_f64() / f64::from(runs) * 1e6;
            let t = std::time::Instant::now();
            for _ in 0..runs {
                std::hint::black_box(std::hint::black_box(&body).clone());
            }
            let clone = t.elapsed().as_secs_f64() / f64::from(runs) * 1e6;
            let raw = serde_json::to_vec(&body).expect("json");
            let t = std::time::Instant::now();
            for _ in 0..runs {
                std::hint::black_box(serde_json::from_slice::<Value>(&raw).expect("json"));
            }
            let parse = t.elapsed().as_secs_f64() / f64::from(runs) * 1e6;
            let keys = keys_of(body.clone());
            let mut m = matcher(1800);
            let t = std::time::Instant::now();
            for i in 0..runs {
                let mut c = call(i as u32 % 64, i64::from(i), keys.clone());
                m.observe(&mut c);
            }
            let matched = t.elapsed().as_secs_f64() / f64::from(runs) * 1e6;
            println!(
                "messages {n} ({} bytes): read {:.1} us, match {matched:.1} us; for scale: \
                 parsing the body {parse:.1} us",
                raw.len(),
                read - clone
            );
        }
    }

    /// Through the exchange: the header and body are read once, the response id joins them, and
    /// embeddings have no history.
    #[test]
    fn the_exchange_carries_the_keys_on_the_record() {
        use crate::clock::Clock;
        use crate::llm::exchange::{ExchangeContext, ExchangeLimits, LlmExchange};
        use crate::protocol::http1::ResponseHead;
        let run = |path: &str, headers: Vec<(String, String)>, body: &str| {
            let head = RequestHead {
                method: "POST".into(),
                path: path.into(),
                headers,
            };
            let dialect = crate::llm::detect(&head).expect("an LLM path");
            let mut ex = LlmExchange::new(&head, dialect, 1_000, ExchangeLimits::default());
            ex.on_request_body(body.as_bytes(), 1_000);
            ex.on_request_end(1_000);
            let resp = ResponseHead {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
            };
            ex.on_response_head(&resp, 2_000);
            ex.on_response_body(br#"{"id":"resp_9","object":"response","output":[]}"#, 2_000);
            ex.on_response_end(3_000);
            let ctx = ExchangeContext {
                role: "client",
                pid: 1,
                comm: "t".into(),
                tls: false,
                peer: None,
                container: None,
                fresh: None,
            };
            ex.finish(&ctx, &Clock { offset_ns: 0 }, false, None)
                .detail
                .conversation
        };
        let k = run(
            "/v1/responses",
            vec![("x-conversation-id".into(), "h-1".into())],
            r#"{"model":"m","input":[{"role":"user","content":"hi"}],"user":"u1"}"#,
        );
        assert_eq!(
            k.explicit,
            Some(("header.x-conversation-id", conversation_hash("h-1")))
        );
        assert_eq!(k.end_user, Some(end_user_hash("u1")));
        assert_eq!(k.response, Some(response_hash("resp_9")));
        assert_eq!(
            k.history,
            keys_of(json!({"input": [{"role": "user", "content": "hi"}]})).history
        );
        let k = run(
            "/v1/embeddings",
            vec![],
            r#"{"model":"m","input":["a","b"]}"#,
        );
        assert!(k.history.is_empty());
    }

    #[test]
    fn calls_without_ids_or_history_get_no_conversation() {
        let mut m = matcher(1800);
        let mut c = call(1, 1, keys_of(json!({"model": "m", "prompt": "x"})));
        assert_eq!(m.observe(&mut c), None);
        assert_eq!((c.conversation_id, c.turn), (None, None));
    }
}
