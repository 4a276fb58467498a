//! The exposition formats of `/metrics`: prometheus-client encodes the registry as
//! OpenMetrics; [`encode_text`] turns that into the classic Prometheus text format (0.0.4),
//! and [`wants_openmetrics`] picks between the two from a scraper's `Accept` header. Pure
//! functions of the registry and the header: the server ([`super`]) decides when to encode.

use prometheus_client::registry::Registry;

/// Content type of [`encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics encoding (`prometheus_client::encoding::text::encode`).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry in the classic Prometheus text format (version 0.0.4), made from its OpenMetrics
/// encoding: `# EOF` and `# UNIT` lines dropped, counter families named `..._total` like their
/// samples, `info` families as gauges, other non-classic types as `untyped`, exemplars dropped.
pub fn encode_text(registry: &Registry) -> String {
    let mut om = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut om, registry) {
        // Cannot happen when writing to a String; what was encoded is still served.
        log::debug!("metrics encoding stopped early: {e}");
    }
    openmetrics_to_text(&om)
}

/// The registry encoded once, as OpenMetrics when `openmetrics`, else the classic text format;
/// with its content type.
pub fn encode_for(registry: &Registry, openmetrics: bool) -> (&'static str, String) {
    if openmetrics {
        let mut om = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut om, registry) {
            // Cannot happen when writing to a String; what was encoded is still served.
            log::debug!("metrics encoding stopped early: {e}");
        }
        (OPENMETRICS_CONTENT_TYPE, om)
    } else {
        (TEXT_CONTENT_TYPE, encode_text(registry))
    }
}

/// Converts an OpenMetrics text exposition to the classic Prometheus text format.
fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // A HELP line waits for its TYPE line, which decides the family name.
    let mut pending_help: Option<(&str, &str)> = None;
    let flush = |out: &mut String, help: Option<(&str, &str)>| {
        if let Some((name, text)) = help {
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            out.push_str(text);
            out.push('\n');
        }
    };
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush(&mut out, pending_help.take());
            pending_help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, om_type) = rest.split_once(' ').unwrap_or((rest, ""));
            let (suffix, text_type) = match om_type {
                "counter" => ("_total", "counter"),
                "gauge" | "histogram" | "summary" => ("", om_type),
                "info" => ("_info", "gauge"),
                _ => ("", "untyped"),
            };
            match pending_help.take() {
                Some((help_name, text)) if help_name == name => {
                    flush(&mut out, Some((&format!("{name}{suffix}"), text)));
                }
                other => flush(&mut out, other),
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(text_type);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" || line.is_empty() {
            continue;
        } else {
            flush(&mut out, pending_help.take());
            out.push_str(without_exemplar(line));
            out.push('\n');
        }
    }
    flush(&mut out, pending_help.take());
    out
}

/// A sample line without its OpenMetrics exemplar (` # {...} value`), which the classic format
/// does not have. Label values are skipped quote- and escape-aware.
fn without_exemplar(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'{' && bytes[i] != b' ' {
        i += 1;
    }
    if i < bytes.len() && bytes[i] == b'{' {
        let (mut quoted, mut escaped) = (false, false);
        i += 1;
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            match (quoted, escaped, b) {
                (true, true, _) => escaped = false,
                (true, false, b'\\') => escaped = true,
                (true, false, b'"') => quoted = false,
                (false, _, b'"') => quoted = true,
                (false, _, b'}') => break,
                _ => {}
            }
        }
    }
    match line.get(i..).and_then(|rest| rest.find(" # ")) {
        Some(cut) => &line[..i + cut],
        None => line,
    }
}

/// True when a scraper's `Accept` header asks for OpenMetrics (`application/openmetrics-text`
/// with a non-zero quality no lower than `text/plain`'s); otherwise the classic text format.
pub fn wants_openmetrics(accept: &str) -> bool {
    let mut openmetrics_q: Option<f32> = None;
    let mut text_q: f32 = 0.0;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut q: f32 = 1.0;
        for param in parts {
            if let Some((k, v)) = param.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v.trim().parse::<f32>().map_or(1.0, |q| q.clamp(0.0, 1.0));
            }
        }
        match media.as_str() {
            "application/openmetrics-text" => {
                openmetrics_q = Some(openmetrics_q.map_or(q, |best| best.max(q)));
            }
            "text/plain" => text_q = text_q.max(q),
            _ => {}
        }
    }
    openmetrics_q.is_some_and(|q| q > 0.0 && q >= text_q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_handles_info_and_exemplars() {
        let om = "# HELP build Build.\n# TYPE build info\nbuild_info{v=\"1 # {x}\"} 1\n\
                  # HELP req Requests.\n# TYPE req counter\n\
                  req_total{a=\"b\\\"}\"} 5 # {trace_id=\"abc\"} 1.0\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{v=\"1 # {x}\"} 1\n\
             # HELP req_total Requests.\n# TYPE req_total counter\nreq_total{a=\"b\\\"}\"} 5\n"
        );
        assert_eq!(without_exemplar("up 1 # {a=\"b\"} 1"), "up 1");
        assert_eq!(without_exemplar("up"), "up");
    }

    #[test]
    fn accept_negotiation() {
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(wants_openmetrics(
            "Application/OpenMetrics-Text; version=1.0.0; charset=utf-8"
        ));
        // Prometheus 2.x and 3.x defaults.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics(
            "text/plain;version=0.0.4,application/openmetrics-text;q=0.5"
        ));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }
}
