//! JSON lines: one object per LLM call, appended to a file or written to stdout. A file can be
//! rotated by size: past `max_bytes` it is renamed to `PATH.1` (replacing the previous one) and a
//! new file is started, so disk use stays under about twice the limit.
//!
//! [`JsonlWriter`] writes and reports errors (`llmprobe replay` stops at the first);
//! [`JsonlSink`] is the agent's sink around it: a failed record is counted
//! (`jsonl_write_failed`), warned about at most once a minute, and the next one is tried.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use log::warn;

use super::CallSink;
use crate::llm::LlmCall;
use crate::telemetry::{DropReason, SelfMetrics};

/// Drop reason: a record could not be written or flushed.
pub const DROP_WRITE_FAILED: DropReason = DropReason::JsonlWriteFailed;
/// Write failures are logged at most this often (a full disk fails every record).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Where records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonlTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file (created if missing).
    File(PathBuf),
}

impl JsonlTarget {
    /// `-` is stdout, anything else a path.
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            JsonlTarget::Stdout
        } else {
            JsonlTarget::File(PathBuf::from(s))
        }
    }
}

/// A JSONL writer.
pub struct JsonlWriter {
    out: Box<dyn Write + Send>,
    path: Option<PathBuf>,
    max_bytes: Option<u64>,
    written: u64,
}

fn open_append(p: &PathBuf) -> anyhow::Result<(Box<dyn Write + Send>, u64)> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .with_context(|| format!("cannot open JSONL output {} for appending", p.display()))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((Box::new(std::io::BufWriter::new(f)), len))
}

impl JsonlWriter {
    /// Opens the target.
    pub fn open(target: &JsonlTarget) -> anyhow::Result<Self> {
        Self::open_rotating(target, None)
    }

    /// Opens the target; a file is rotated once it exceeds `max_bytes`.
    pub fn open_rotating(target: &JsonlTarget, max_bytes: Option<u64>) -> anyhow::Result<Self> {
        match target {
            JsonlTarget::Stdout => Ok(JsonlWriter {
                out: Box::new(std::io::LineWriter::new(std::io::stdout())),
                path: None,
                max_bytes: None,
                written: 0,
            }),
            JsonlTarget::File(p) => {
                let (out, written) = open_append(p)?;
                Ok(JsonlWriter {
                    out,
                    path: Some(p.clone()),
                    max_bytes,
                    written,
                })
            }
        }
    }

    /// Writes one record.
    pub fn write(&mut self, call: &LlmCall) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(call)?;
        line.push(b'\n');
        if let (Some(max), Some(path)) = (self.max_bytes, self.path.clone())
            && self.written > 0
            && self.written + line.len() as u64 > max
        {
            self.out.flush()?;
            let mut rotated = path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&path, &rotated)
                .with_context(|| format!("cannot rotate {}", path.display()))?;
            let (out, written) = open_append(&path)?;
            self.out = out;
            self.written = written;
        }
        self.out.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// The JSONL writer as a [`CallSink`]: each batch is written and flushed; every record that
/// fails is counted in `llmprobe_dropped_total{reason="jsonl_write_failed"}`, with a warning
/// at most once a minute.
pub struct JsonlSink {
    /// None once closed.
    writer: Option<JsonlWriter>,
    metrics: Arc<SelfMetrics>,
    warned: Option<Instant>,
}

impl JsonlSink {
    /// A sink writing through `writer`, counting its failures in `metrics`.
    pub fn new(writer: JsonlWriter, metrics: Arc<SelfMetrics>) -> Self {
        JsonlSink {
            writer: Some(writer),
            metrics,
            warned: None,
        }
    }
}

impl CallSink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn emit(&mut self, calls: &[LlmCall]) {
        let Some(w) = self.writer.as_mut() else {
            if !calls.is_empty() {
                self.metrics.drop_by(DROP_WRITE_FAILED, calls.len() as u64);
            }
            return;
        };
        let mut failed = None;
        for c in calls {
            if let Err(e) = w.write(c) {
                self.metrics.drop_for(DROP_WRITE_FAILED);
                failed = Some(e);
            }
        }
        if let Err(e) = w.flush() {
            self.metrics.drop_for(DROP_WRITE_FAILED);
            failed = Some(e);
        }
        if let Some(e) = failed
            && self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY)
        {
            warn!(
                "JSONL write failed (counted in llmprobe_dropped_total{{reason=\"{DROP_WRITE_FAILED}\"}}): {e:#}"
            );
            self.warned = Some(Instant::now());
        }
    }

    fn close(&mut self) {
        if let Some(mut w) = self.writer.take()
            && let Err(e) = w.flush()
        {
            warn!("JSONL output could not be flushed at exit: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u32) -> LlmCall {
        LlmCall {
            start_time: "2026-01-01T00:00:00.000000Z".into(),
            end_time: "2026-01-01T00:00:01.000000Z".into(),
            role: "client",
            pid: n,
            comm: "python".into(),
            container_id: None,
            tls: true,
            peer_addr: None,
            server_address: None,
            server_port: None,
            http_method: "POST".into(),
            http_path: "/v1/chat/completions".into(),
            http_status: Some(200),
            provider: "openai".into(),
            api: "openai.chat_completions",
            operation: "chat",
            request_model: Some("m".into()),
            response_model: None,
            stream: Some(true),
            input_tokens: None,
            output_tokens: None,
            reasoning_tokens: None,
            cached_input_tokens: None,
            token_source: None,
            duration_s: 1.0,
            ttft_s: None,
            tpot_s: None,
            reasoning_s: None,
            tbt_p50_s: None,
            tbt_p95_s: None,
            tbt_max_s: None,
            chunks: None,
            finish_reason: None,
            error_type: None,
            retry_after: None,
            aborted: false,
            request_id: None,
            trace_id: None,
            gpu_util_mean: None,
            gpu_mem_used_bytes: None,
            gpu_power_mean_w: None,
            detail: Default::default(),
            ..Default::default()
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_every_record() {
        let dir = std::env::temp_dir().join(format!("llmprobe-jsonl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("calls.jsonl");
        let one = serde_json::to_vec(&call(1)).expect("json").len() as u64 + 1;
        let mut w = JsonlWriter::open_rotating(&JsonlTarget::File(path.clone()), Some(one * 3))
            .expect("open");
        for n in 0..5 {
            w.write(&call(n)).expect("write");
        }
        w.flush().expect("flush");
        let cur = std::fs::read_to_string(&path).expect("current");
        let old = std::fs::read_to_string(dir.join("calls.jsonl.1")).expect("rotated");
        assert_eq!(old.lines().count(), 3);
        assert_eq!(cur.lines().count(), 2);
        assert!(cur.len() as u64 <= one * 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_sink_counts_failures_and_keeps_going() {
        let metrics = Arc::new(SelfMetrics::unregistered());
        // Writes to /dev/full are buffered, then the flush fails (ENOSPC): one drop per batch.
        let w = JsonlWriter::open(&JsonlTarget::File("/dev/full".into())).expect("open");
        let mut sink = JsonlSink::new(w, metrics.clone());
        sink.emit(&[call(1), call(2)]);
        sink.emit(&[call(3)]);
        assert_eq!(metrics.dropped_count(DROP_WRITE_FAILED), 2);
        sink.close();
        sink.emit(&[call(4), call(5)]);
        assert_eq!(metrics.dropped_count(DROP_WRITE_FAILED), 4);

        let dir = std::env::temp_dir().join(format!("llmprobe-jsonl-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("calls.jsonl");
        let metrics = Arc::new(SelfMetrics::unregistered());
        let w = JsonlWriter::open(&JsonlTarget::File(path.clone())).expect("open");
        let mut sink = JsonlSink::new(w, metrics.clone());
        sink.emit(&[call(1), call(2)]);
        // Each batch is flushed: readable before close.
        assert_eq!(
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count(),
            2
        );
        sink.close();
        assert_eq!(metrics.dropped_count(DROP_WRITE_FAILED), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
