//! Every provider dialect through `llm::detect` and `LlmExchange`, as the connection tracker
//! drives them: a request head (path and headers from tables), a fuzzed request body, a response
//! head (status, Content-Type, Content-Encoding from tables) and a fuzzed response body (SSE,
//! NDJSON, a JSON array or a whole body, possibly compressed).
//!
//! Stream after the 9-byte header: `[path][response: status bits 0-1, type bits 2-4, encoding
//! bits 5-7][request body length: u16 LE][request body][response body]`. Mode bits: 0 = the
//! response ends (else the connection is cut), 1 = small exchange limits, 2 = GET, 3 = add host
//! and traceparent headers.
//!
//! Invariants: the record is sane ([`check_call`]); fed in pieces at one instant, the record is
//! the same as fed whole (when the body decoded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmprobe::clock::Clock;
use llmprobe::llm::LlmCall;
use llmprobe::llm::exchange::{ExchangeContext, ExchangeLimits, LlmExchange};
use llmprobe::protocol::http1::{RequestHead, ResponseHead};
use llmprobe_fuzz::dialect::{ENCODINGS, PATHS, STATUSES, TYPES};
use llmprobe_fuzz::{Input, Rng, check_call, cut};

struct Case<'a> {
    mode: u8,
    path: &'static str,
    status: u16,
    ctype: &'static str,
    encoding: &'static str,
    req: &'a [u8],
    resp: &'a [u8],
}

impl<'a> Case<'a> {
    fn parse(input: &Input<'a>) -> Option<Self> {
        let d = input.data;
        if d.len() < 4 {
            return None;
        }
        let sel = d[1];
        let req_len = usize::from(u16::from_le_bytes([d[2], d[3]])).min(d.len() - 4);
        Some(Case {
            mode: input.mode,
            path: PATHS[usize::from(d[0] & 31) % PATHS.len()],
            status: STATUSES[usize::from(sel & 3)],
            ctype: TYPES[usize::from(sel >> 2 & 7)],
            encoding: ENCODINGS[usize::from(sel >> 5)],
            req: &d[4..4 + req_len],
            resp: &d[4 + req_len..],
        })
    }

    fn limits(&self) -> ExchangeLimits {
        if self.mode & 2 != 0 {
            ExchangeLimits {
                max_request_body: 64,
                max_response_body: 256,
                max_output_events: 8,
                max_decoded_stream: 1024,
            }
        } else {
            ExchangeLimits::default()
        }
    }

    fn request_head(&self) -> RequestHead {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if self.mode & 8 != 0 {
            headers.push(("host".to_owned(), "api.openai.com:443".to_owned()));
            headers.push((
                "traceparent".to_owned(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
            ));
        }
        RequestHead {
            method: if self.mode & 4 != 0 { "GET" } else { "POST" }.to_owned(),
            path: self.path.to_owned(),
            headers,
        }
    }

    fn response_head(&self) -> ResponseHead {
        let mut headers = vec![("x-request-id".to_owned(), "req_1".to_owned())];
        if !self.ctype.is_empty() {
            headers.push(("content-type".to_owned(), self.ctype.to_owned()));
        }
        if !self.encoding.is_empty() {
            headers.push(("content-encoding".to_owned(), self.encoding.to_owned()));
        }
        if self.status == 429 {
            headers.push(("retry-after".to_owned(), "7".to_owned()));
        }
        ResponseHead {
            status: self.status,
            headers,
        }
    }

    /// Runs the exchange; `req`/`resp` are the body pieces, `step` the time between pieces, `gaps`
    /// replaces some request pieces by a capture gap. None when no dialect takes the request.
    fn run(
        &self,
        req: &[&[u8]],
        resp: &[&[u8]],
        step: u64,
        rng: Option<&mut Rng>,
    ) -> Option<(LlmCall, u64)> {
        let head = self.request_head();
        let (dialect, candidate) = match llmprobe::llm::detect(&head) {
            Some(d) => (d, false),
            None => (llmprobe::llm::detect_candidate(&head)?, true),
        };
        let mut ts = 1_000_000u64;
        let mut ex = LlmExchange::new(&head, dialect, ts, self.limits());
        if candidate {
            ex.set_candidate();
        }
        let mut rng = rng;
        for piece in req {
            ts += step;
            if let Some(r) = rng.as_mut()
                && r.one_in(8)
            {
                ex.on_request_gap();
            } else {
                ex.on_request_body(piece, ts);
            }
        }
        ts += step;
        ex.on_request_end(ts);
        if ex.is_rejected() {
            // The tracker forgets rejected candidates; the record must still be writable.
            assert!(candidate);
        }
        ts += step;
        ex.on_response_head(&self.response_head(), ts);
        for piece in resp {
            ts += step;
            ex.on_response_body(piece, ts);
        }
        let ends = self.mode & 1 != 0;
        if ends {
            ts += step;
            ex.on_response_end(ts);
            assert!(ex.is_complete());
        }
        let undecodable = ex.issues.undecodable_bodies;
        let ctx = ExchangeContext {
            role: "client",
            pid: 7,
            comm: "fuzz".to_owned(),
            tls: true,
            peer: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
            container: None,
            fresh: None,
        };
        let call = ex.finish(
            &ctx,
            &Clock {
                offset_ns: 1_700_000_000_000_000_000,
            },
            !ends,
            Some(ts + step),
        );
        check_call(&call);
        // Key-like query values never reach the record.
        assert!(!call.http_path.contains("AIzaSECRET"), "{}", call.http_path);
        Some((call, undecodable))
    }
}

fuzz_target!(|raw: &[u8]| {
    let input = Input::parse(raw);
    let Some(case) = Case::parse(&input) else {
        return;
    };
    let Some((whole, whole_bad)) = case.run(&[case.req], &[case.resp], 0, None) else {
        return;
    };
    let mut rng = Rng::new(input.seed);
    let req = cut(case.req, &mut rng);
    let resp = cut(case.resp, &mut rng);
    let (split, split_bad) = case
        .run(&req, &resp, 0, None)
        .expect("detected once, detected again");
    let guessed = case.encoding == "deflate"
        && resp
            .iter()
            .find(|p| !p.is_empty())
            .is_some_and(|p| p.len() < 2);
    if whole_bad == 0 && split_bad == 0 && !guessed {
        assert_eq!(
            split,
            whole,
            "request in {} pieces, response in {}",
            req.len(),
            resp.len()
        );
    }
    // Pieces spread over time, with request gaps: only sanity.
    let step = 1 + rng.below(50_000_000);
    case.run(&req, &resp, step, Some(&mut rng));
});
