//! OTLP exporter settings: the endpoint, protocol, headers and batching bounds, from the
//! command line and the standard OpenTelemetry environment variables ([`OtlpConfig`]). Pure:
//! nothing here touches the network.

use std::time::Duration;

use log::warn;

use crate::secrets::{log_safe, percent_decode};

/// OTLP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`: POST `application/x-protobuf` to `.../v1/traces` (the OTel default).
    HttpProtobuf,
    /// `grpc`: `TraceService/Export` over HTTP/2.
    Grpc,
}

impl OtlpProtocol {
    /// Parses `http/protobuf` or `grpc` (case-insensitive). `http/json` and anything else are
    /// not supported: None.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" | "http" | "http-protobuf" => Some(OtlpProtocol::HttpProtobuf),
            "grpc" => Some(OtlpProtocol::Grpc),
            _ => None,
        }
    }

    /// The OTel name (`http/protobuf`, `grpc`).
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

/// Exporter settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The resolved URL: for http/protobuf the full traces URL (`.../v1/traces`); for gRPC
    /// `scheme://host:port`.
    pub endpoint: String,
    /// Transport.
    pub protocol: OtlpProtocol,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Extra request headers (gRPC metadata), e.g. an auth token.
    pub headers: Vec<(String, String)>,
    /// Spans queued before `send` starts dropping (default 2048).
    pub max_queue: usize,
    /// Spans per export request (default 512).
    pub max_batch: usize,
    /// Longest a span waits for its batch (default 1 s).
    pub flush_interval: Duration,
    /// Per-export timeout, connecting included; also bounds `shutdown` (default 5 s).
    pub timeout: Duration,
}

impl OtlpConfig {
    /// A config with the defaults for `endpoint` (already resolved, see [`OtlpConfig::endpoint`]).
    pub fn new(endpoint: impl Into<String>, protocol: OtlpProtocol) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            protocol,
            service_name: "llmprobe".to_owned(),
            headers: Vec::new(),
            max_queue: 2048,
            max_batch: 512,
            flush_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }

    /// The config from command-line flags and the standard OTel environment variables, or None
    /// when no endpoint is given anywhere (export off).
    ///
    /// Endpoint, first found: `endpoint_flag` (a base URL like `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// a URL whose path already ends in `/v1/traces` is used as is),
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, used as is),
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (base: http/protobuf appends `v1/traces`). A missing
    /// scheme means `http://`. Protocol: `protocol_flag`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, default `http/protobuf`. Also honoured:
    /// `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` (`k=v,k=v`, values percent-decoded),
    /// `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT` (ms), `OTEL_SERVICE_NAME` (default `llmprobe`),
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`
    /// (ms). Unusable values are reported (warning) and replaced by defaults.
    pub fn from_env_and_flags(
        endpoint_flag: Option<&str>,
        protocol_flag: Option<&str>,
    ) -> Option<OtlpConfig> {
        Self::from_lookup(endpoint_flag, protocol_flag, &|k| std::env::var(k).ok())
    }

    fn from_lookup(
        endpoint_flag: Option<&str>,
        protocol_flag: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<OtlpConfig> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let endpoint_flag = endpoint_flag.map(str::trim).filter(|s| !s.is_empty());
        let protocol_flag = protocol_flag.map(str::trim).filter(|s| !s.is_empty());

        let protocol = match protocol_flag
            .map(str::to_owned)
            .or_else(|| get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            None => OtlpProtocol::HttpProtobuf,
            Some(p) => OtlpProtocol::parse(&p).unwrap_or_else(|| {
                warn!("OTLP protocol \"{}\" is not supported (use http/protobuf or grpc); using http/protobuf", log_safe(&p));
                OtlpProtocol::HttpProtobuf
            }),
        };

        // (url, is_full_traces_url)
        let (raw, full) = if let Some(f) = endpoint_flag {
            let full = url_path(f).trim_end_matches('/').ends_with("/v1/traces");
            (f.to_owned(), full)
        } else if let Some(t) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            (t, true)
        } else {
            (get("OTEL_EXPORTER_OTLP_ENDPOINT")?, false)
        };
        let raw = if raw.contains("://") {
            raw
        } else {
            format!("http://{raw}")
        };
        let endpoint = match protocol {
            OtlpProtocol::Grpc => grpc_origin(&raw),
            OtlpProtocol::HttpProtobuf if full => raw,
            OtlpProtocol::HttpProtobuf => {
                if raw.ends_with('/') {
                    format!("{raw}v1/traces")
                } else {
                    format!("{raw}/v1/traces")
                }
            }
        };

        let mut cfg = OtlpConfig::new(endpoint, protocol);
        if let Some(s) = get("OTEL_SERVICE_NAME") {
            cfg.service_name = s;
        }
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(h) = get(var) {
                for (k, v) in parse_headers(&h) {
                    cfg.headers.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
                    cfg.headers.push((k, v));
                }
            }
        }
        let num = |k: &str| -> Option<u64> {
            let v = get(k)?;
            match v.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    warn!("ignoring {k}=\"{}\": not a positive integer", log_safe(&v));
                    None
                }
            }
        };
        if let Some(ms) =
            num("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").or_else(|| num("OTEL_EXPORTER_OTLP_TIMEOUT"))
        {
            cfg.timeout = Duration::from_millis(ms);
        }
        if let Some(n) = num("OTEL_BSP_MAX_QUEUE_SIZE") {
            cfg.max_queue = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            cfg.max_batch = usize::try_from(n).unwrap_or(usize::MAX);
        }
        cfg.max_batch = cfg.max_batch.min(cfg.max_queue);
        if let Some(ms) = num("OTEL_BSP_SCHEDULE_DELAY") {
            cfg.flush_interval = Duration::from_millis(ms);
        }
        Some(cfg)
    }
}

/// The path of a URL (`/` when none).
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// `scheme://authority` of a URL (gRPC ignores paths).
fn grpc_origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let auth = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{auth}")
}

/// `k=v,k2=v2` (W3C baggage style, values percent-encoded); bad entries are skipped.
fn parse_headers(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((k, v)) = item.split_once('=') else {
            // The entry may be a secret value: never log it.
            warn!(
                "ignoring an OTLP header entry ({} bytes): expected key=value",
                item.len()
            );
            continue;
        };
        let k = percent_decode(k.trim());
        let v = percent_decode(v.trim());
        let valid_key = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let valid_value = v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        if valid_key && valid_value {
            out.push((k, v));
        } else {
            warn!(
                "ignoring OTLP header \"{}\": not a valid HTTP header",
                log_safe(&k)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg_from(
        flag: Option<&str>,
        proto: Option<&str>,
        env: &[(&str, &str)],
    ) -> Option<OtlpConfig> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpConfig::from_lookup(flag, proto, &|k| env.get(k).cloned())
    }

    #[test]
    fn config_from_env_and_flags() {
        assert_eq!(cfg_from(None, None, &[]), None);
        assert_eq!(cfg_from(None, Some("grpc"), &[]), None);

        let c = cfg_from(
            None,
            None,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4318")],
        )
        .expect("cfg");
        assert_eq!(c.endpoint, "http://col:4318/v1/traces");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.service_name, "llmprobe");
        assert_eq!((c.max_queue, c.max_batch), (2048, 512));
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(5));

        let c = cfg_from(
            None,
            None,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4318/base/")],
        )
        .expect("cfg");
        assert_eq!(c.endpoint, "http://col:4318/base/v1/traces");

        // The signal-specific variable is the full URL and wins.
        let c = cfg_from(
            None,
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://other:9999/custom/path",
                ),
            ],
        )
        .expect("cfg");
        assert_eq!(c.endpoint, "http://other:9999/custom/path");

        // The flag wins over both; a base URL, unless it already names /v1/traces.
        let env = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:9999/x")];
        let c = cfg_from(Some("localhost:4318"), None, &env).expect("cfg");
        assert_eq!(c.endpoint, "http://localhost:4318/v1/traces");
        let c = cfg_from(Some("https://c.example/v1/traces"), None, &env).expect("cfg");
        assert_eq!(c.endpoint, "https://c.example/v1/traces");

        // gRPC: the origin only; flag beats env for the protocol.
        let c = cfg_from(
            None,
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4317/ignored"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .expect("cfg");
        assert_eq!(
            (c.endpoint.as_str(), c.protocol),
            ("http://col:4317", OtlpProtocol::Grpc)
        );
        let c = cfg_from(
            Some("http://col:4318"),
            Some("http/protobuf"),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
        )
        .expect("cfg");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
        // Unsupported protocols fall back to http/protobuf.
        let c = cfg_from(Some("http://col:4318"), Some("http/json"), &[]).expect("cfg");
        assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);

        let c = cfg_from(
            Some("http://col:4318"),
            None,
            &[
                ("OTEL_SERVICE_NAME", "agent-7"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "api-key=s%20ecret, x-tenant = t1,bad,=x",
                ),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Tenant=t2"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
                ("OTEL_BSP_SCHEDULE_DELAY", "abc"),
            ],
        )
        .expect("cfg");
        assert_eq!(c.service_name, "agent-7");
        assert_eq!(
            c.headers,
            vec![
                ("api-key".to_owned(), "s ecret".to_owned()),
                ("X-Tenant".to_owned(), "t2".to_owned())
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!((c.max_queue, c.max_batch), (100, 100));
        assert_eq!(c.flush_interval, Duration::from_secs(1));
    }
}
