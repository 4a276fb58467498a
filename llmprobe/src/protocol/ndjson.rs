//! Newline-delimited JSON (`application/x-ndjson`, Ollama's streams): splits a body into lines
//! as bytes arrive, whatever the split points, each non-blank line one [`StreamEvent`] (data
//! only). Lines are bounded; an over-long line is dropped (reported once) up to its newline.

use super::{EventRef, StreamEvent};

/// Default longest line kept.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// A line over the limit was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

/// Incremental line splitter.
#[derive(Debug, Default)]
pub struct NdjsonDecoder {
    buf: Vec<u8>,
    max: usize,
    skipping: bool,
}

impl NdjsonDecoder {
    /// With the default line limit.
    pub fn new() -> Self {
        Self::with_max_line_bytes(DEFAULT_MAX_LINE_BYTES)
    }

    /// With a line limit.
    pub fn with_max_line_bytes(max: usize) -> Self {
        NdjsonDecoder {
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    /// Feeds body bytes; complete non-blank lines (without `\r\n`/`\n`, lossy UTF-8) are appended
    /// to `out` as events. Every line before an error is still delivered.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), LineTooLong> {
        self.feed_with(data, &mut |ev| out.push(ev.to_event()))
    }

    /// [`NdjsonDecoder::feed`], each line handed to `f` borrowed (from the input when it lies
    /// whole in it, else from the decoder's buffer): nothing is allocated per line.
    pub fn feed_with(
        &mut self,
        data: &[u8],
        f: &mut impl FnMut(EventRef<'_>),
    ) -> Result<(), LineTooLong> {
        let mut result = Ok(());
        let mut rest = data;
        while !rest.is_empty() {
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    if !self.skipping {
                        if self.buf.len() + nl > self.max {
                            result = Err(LineTooLong);
                        } else if self.buf.is_empty() {
                            push_line(&rest[..nl], f);
                        } else {
                            self.buf.extend_from_slice(&rest[..nl]);
                            push_line(&self.buf, f);
                        }
                    }
                    self.clear();
                    self.skipping = false;
                    rest = &rest[nl + 1..];
                }
                None => {
                    if !self.skipping {
                        if self.buf.len() + rest.len() > self.max {
                            self.clear();
                            self.skipping = true;
                            result = Err(LineTooLong);
                        } else {
                            self.buf.extend_from_slice(rest);
                        }
                    }
                    rest = &[];
                }
            }
        }
        result
    }

    /// End of body: a last line without a newline is delivered.
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        self.finish_with(&mut |ev| out.push(ev.to_event()));
    }

    /// [`NdjsonDecoder::finish`], the last line handed to `f`.
    pub fn finish_with(&mut self, f: &mut impl FnMut(EventRef<'_>)) {
        if !self.skipping {
            push_line(&self.buf, f);
        }
        self.clear();
        self.skipping = false;
    }

    /// Empties the line buffer, letting go of one that grew for a long line.
    fn clear(&mut self) {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Bytes held for an incomplete line.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }
}

/// Buffers that grew past this for one long line are let go after it.
const KEEP_CAPACITY: usize = 16 * 1024;

fn push_line(line: &[u8], f: &mut impl FnMut(EventRef<'_>)) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().any(|b| !b.is_ascii_whitespace()) {
        f(EventRef {
            event: None,
            data: &super::lossy(line),
            id: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "{\"message\":{\"content\":\"你好\"},\"done\":false}\r\n\n{\"done\":true,\"eval_count\":2}\n{\"tail\":1}";

    #[test]
    fn any_split_gives_the_same_lines() {
        let mut whole = Vec::new();
        let mut d = NdjsonDecoder::new();
        assert_eq!(d.feed(BODY.as_bytes(), &mut whole), Ok(()));
        d.finish(&mut whole);
        assert_eq!(whole.len(), 3);
        assert_eq!(
            whole[0],
            StreamEvent::data("{\"message\":{\"content\":\"你好\"},\"done\":false}".into())
        );
        for cut in 0..BODY.len() {
            let mut got = Vec::new();
            let mut d = NdjsonDecoder::new();
            let _ = d.feed(&BODY.as_bytes()[..cut], &mut got);
            let _ = d.feed(&BODY.as_bytes()[cut..], &mut got);
            d.finish(&mut got);
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn long_lines_are_dropped_and_decoding_goes_on() {
        let mut d = NdjsonDecoder::with_max_line_bytes(8);
        let mut out = Vec::new();
        assert_eq!(d.feed(b"0123456789", &mut out), Err(LineTooLong));
        assert_eq!(d.feed(b"abc\n{\"a\":1}\n", &mut out), Ok(()));
        assert_eq!(out, vec![StreamEvent::data("{\"a\":1}".into())]);
        assert!(d.buffered_bytes() == 0);
    }
}
