//! Placeholder: filled in by the gemini dialect work.

use super::ProviderDialect;
use crate::protocol::http1::RequestHead;

/// Recognises this dialect's requests.
pub fn detect(_head: &RequestHead) -> Option<Box<dyn ProviderDialect>> {
    None
}
