//! The trace page served at `--ui-addr`: static assets built into the binary.

use super::api::Answer;

/// The page's assets by path; None for any other path.
pub fn asset(path: &str) -> Option<Answer> {
    match path {
        "/" | "/index.html" => Some(Answer {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            body: INDEX.as_bytes().to_vec(),
        }),
        _ => None,
    }
}

const INDEX: &str = "<!doctype html><meta charset=utf-8><title>llmprobe</title><p>llmprobe: the API is at /api/v1/calls</p>";
