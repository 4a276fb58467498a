//! JSON lines: one object per LLM call, appended to a file or written to stdout.

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
}

impl JsonlWriter {
    /// Opens the target.
    pub fn open(target: &JsonlTarget) -> anyhow::Result<Self> {
        let out: Box<dyn Write + Send> = match target {
            JsonlTarget::Stdout => Box::new(std::io::LineWriter::new(std::io::stdout())),
            JsonlTarget::File(p) => Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| {
                        format!("cannot open JSONL output {} for appending", p.display())
                    })?,
            )),
        };
        Ok(JsonlWriter { out })
    }

    /// Writes one record.
    pub fn write(&mut self, call: &LlmCall) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, call)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}
