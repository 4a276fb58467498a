//! A streamed JSON array (`[{...},{...}]` sent piece by piece, as Gemini's
//! `streamGenerateContent` does without `alt=sse`): yields each top-level element as soon as its
//! closing brace arrives, as one [`StreamEvent`] (data only). Strings and escapes are tracked so
//! braces inside text do not count. Elements are bounded; a body that is not an array is reported
//! as such.

use super::StreamEvent;

/// Default longest element kept.
pub const DEFAULT_MAX_ELEMENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Nothing but whitespace yet.
    Unknown,
    /// The body is an array.
    Array,
    /// The body is something else (an object, an error...).
    NotArray,
}

/// Incremental splitter.
#[derive(Debug)]
pub struct JsonArraySplitter {
    shape: Shape,
    depth: u32,
    in_string: bool,
    escaped: bool,
    element: Vec<u8>,
    /// Bytes of the current element were dropped (it is over the limit).
    truncated: bool,
    max: usize,
    oversized: bool,
}

impl JsonArraySplitter {
    /// Bytes held for the element being read.
    pub fn buffered_bytes(&self) -> usize {
        self.element.len()
    }
}

impl Default for JsonArraySplitter {
    fn default() -> Self {
        Self::with_max_element_bytes(DEFAULT_MAX_ELEMENT_BYTES)
    }
}

impl JsonArraySplitter {
    /// With an element size limit.
    pub fn with_max_element_bytes(max: usize) -> Self {
        JsonArraySplitter {
            shape: Shape::Unknown,
            depth: 0,
            in_string: false,
            escaped: false,
            element: Vec::new(),
            truncated: false,
            max,
            oversized: false,
        }
    }

    /// True once the body is known to be a JSON array.
    pub fn is_array(&self) -> bool {
        self.shape == Shape::Array
    }

    /// Elements dropped for being over the limit so far are reported by returning true once.
    pub fn take_oversized(&mut self) -> bool {
        std::mem::take(&mut self.oversized)
    }

    /// Feeds body bytes; complete top-level object/array elements are appended to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) {
        for &b in data {
            match self.shape {
                Shape::NotArray => return,
                Shape::Unknown => {
                    if b.is_ascii_whitespace() {
                        continue;
                    }
                    if b == b'[' {
                        self.shape = Shape::Array;
                        self.depth = 1;
                    } else {
                        self.shape = Shape::NotArray;
                        return;
                    }
                    continue;
                }
                Shape::Array => {}
            }
            if self.depth == 0 {
                continue; // after the closing bracket
            }
            let inside = self.depth >= 2;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' if inside => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            if inside || self.depth >= 2 {
                if self.element.len() < self.max {
                    self.element.push(b);
                } else {
                    self.truncated = true;
                    self.oversized = true;
                }
            }
            if inside && self.depth == 1 && !self.in_string {
                if !self.truncated {
                    out.push(StreamEvent::data(
                        String::from_utf8_lossy(&self.element).into_owned(),
                    ));
                }
                self.element.clear();
                self.truncated = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a}]{\\\"\"}]}}]}\r\n,{\"usageMetadata\":{\"promptTokenCount\":3}}\r\n]";

    #[test]
    fn elements_in_any_pieces() {
        let mut whole = Vec::new();
        let mut s = JsonArraySplitter::default();
        s.feed(BODY.as_bytes(), &mut whole);
        assert!(s.is_array());
        assert_eq!(whole.len(), 2);
        assert_eq!(
            whole[0].data,
            "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a}]{\\\"\"}]}}]}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&whole[1].data).is_ok());
        for cut in 0..BODY.len() {
            let mut got = Vec::new();
            let mut s = JsonArraySplitter::default();
            s.feed(&BODY.as_bytes()[..cut], &mut got);
            s.feed(&BODY.as_bytes()[cut..], &mut got);
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn objects_are_not_arrays_and_big_elements_are_dropped() {
        let mut s = JsonArraySplitter::default();
        let mut out = Vec::new();
        s.feed(b"  {\"error\":{}}", &mut out);
        assert!(!s.is_array());
        assert!(out.is_empty());
        let mut s = JsonArraySplitter::with_max_element_bytes(4);
        s.feed(b"[{\"abcdef\":1},{}]", &mut out);
        assert_eq!(out, vec![StreamEvent::data("{}".into())]);
        assert!(s.take_oversized());
    }

    /// Found by the `json_array` fuzz target: an element of exactly the limit was dropped without
    /// being reported; one byte more is reported.
    #[test]
    fn element_at_the_limit_is_kept_and_one_over_is_reported() {
        let mut s = JsonArraySplitter::with_max_element_bytes(4);
        let mut out = Vec::new();
        s.feed(b"[{12}]", &mut out);
        assert_eq!(out, vec![StreamEvent::data("{12}".into())]);
        assert!(!s.take_oversized());
        out.clear();
        let mut s = JsonArraySplitter::with_max_element_bytes(4);
        s.feed(b"[{123},{}]", &mut out);
        assert_eq!(out, vec![StreamEvent::data("{}".into())]);
        assert!(s.take_oversized());
    }
}
