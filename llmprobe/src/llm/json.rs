//! Small readers of `serde_json::Value` shared by the dialects: missing or mistyped fields are
//! `None`, never a panic.

use serde_json::Value;

/// The unsigned integer at a path of object keys.
pub(crate) fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_u64()
}

/// A non-empty string, if the value is one.
pub(crate) fn nonempty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The non-empty string field `key`, owned.
pub(crate) fn string_at(v: &Value, key: &str) -> Option<String> {
    nonempty_str(v.get(key)).map(str::to_owned)
}

/// Parses a request body and notes its `model` and `stream` flag (absent: not streamed). A body
/// that does not parse (cut by a capture gap) still gives both by scan, and yields None.
pub(crate) fn request_body(body: &[u8], out: &mut super::Observed) -> Option<Value> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        // The model and stream flag usually sit before the gap.
        out.request_model = super::scan_json_string(body, "model");
        out.stream = super::scan_json_bool(body, "stream");
        return None;
    };
    out.request_model = string_at(&v, "model");
    out.stream = Some(v.get("stream").and_then(Value::as_bool).unwrap_or(false));
    Some(v)
}

/// Characters (not bytes) of a string.
pub(crate) fn chars(s: &str) -> u64 {
    s.chars().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers() {
        let v: Value = serde_json::json!({"a": {"b": 3}, "s": "héllo", "e": "", "n": -1});
        assert_eq!(u64_at(&v, &["a", "b"]), Some(3));
        assert_eq!(u64_at(&v, &["a", "x"]), None);
        assert_eq!(u64_at(&v, &["n"]), None);
        assert_eq!(string_at(&v, "s").as_deref(), Some("héllo"));
        assert_eq!(string_at(&v, "e"), None);
        assert_eq!(chars("héllo"), 5);
    }
}
