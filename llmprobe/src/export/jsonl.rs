//! JSON lines: one object per LLM call, appended to a file or written to stdout. A file can be
//! rotated by size: past `max_bytes` it is renamed to `PATH.1` (replacing the previous one) and a
//! new file is started, so disk use stays under about twice the limit.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::llm::LlmCall;

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
}
