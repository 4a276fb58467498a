//! Every-split tests of the HTTP/2 parser: a client stream with the preface, SETTINGS, HEADERS
//! with Huffman-coded and dynamic-table fields (RFC 7541 C.4), CONTINUATION, padding, priority,
//! PING, WINDOW_UPDATE, interleaved streams, RST_STREAM and GOAWAY, and a server stream.

use loona_hpack::Encoder;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in pairs {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

/// RFC 7541 C.4.1-C.4.3: three request blocks with Huffman coding, the second and third using
/// the dynamic table entries the first and second added.
fn rfc_blocks() -> [Vec<u8>; 3] {
    [
        hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        hex("8286 84be 5886 a8eb 1064 9cbf"),
        hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
    ]
}

fn secret_block(enc: &mut Encoder<'_>) -> Vec<u8> {
    enc.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"https"),
        (
            b":path",
            b"/v1beta/models/g:streamGenerateContent?alt=sse&key=AIza-q",
        ),
        (b":authority", b"api.example.com"),
        (b"authorization", b"Bearer sk-h2-secret"),
        (b"cookie", b"session=s3cr3t"),
        (b"content-type", b"application/json"),
    ])
}

/// The client's bytes, and the events they must give.
fn client_stream() -> (Vec<u8>, Vec<H2Event>) {
    let [b1, b2, b3] = rfc_blocks();
    let mut enc = Encoder::new();
    let sb = secret_block(&mut enc);
    let mut v = PREFACE.to_vec();
    v.extend(settings(&[(0x1, 4096), (0x3, 100), (0x5, 16384)]));
    v.extend(frame(0x8, 0, 0, &[0, 0, 0xff, 0xff])); // WINDOW_UPDATE
    // HEADERS stream 1: padded (3) and with priority.
    let mut p = vec![3, 0, 0, 0, 0, 16];
    p.extend_from_slice(&b1);
    p.extend_from_slice(&[0, 0, 0]);
    v.extend(frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 1, &p));
    // HEADERS stream 3, split into HEADERS + CONTINUATION + CONTINUATION.
    v.extend(frame(HEADERS, 0, 3, &b2[..3]));
    v.extend(frame(CONTINUATION, 0, 3, &b2[3..7]));
    v.extend(frame(CONTINUATION, END_HEADERS, 3, &b2[7..]));
    v.extend(frame(0x6, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8])); // PING
    v.extend(frame(0x2, 0, 3, &[0, 0, 0, 1, 9])); // PRIORITY
    // DATA stream 1, padded (2), then DATA stream 3, then END_STREAM on 1 with an empty DATA.
    v.extend(frame(DATA, PADDED, 1, b"\x02{\"a\":1}\0\0"));
    v.extend(frame(DATA, 0, 3, b"{\"b\":2}"));
    v.extend(frame(0xfa, 0xff, 1, b"unknown type")); // skipped
    v.extend(frame(DATA, END_STREAM, 1, b""));
    v.extend(frame(RST_STREAM, 0, 3, &8u32.to_be_bytes()));
    v.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &b3));
    v.extend(frame(HEADERS, END_HEADERS, 7, &sb));
    v.extend(frame(GOAWAY, 0, 0, b"\0\0\0\x07\0\0\0\0debug data"));
    let block = |m: &str, sch: &str, path: &str, auth: &str, h: &[(&str, &str)]| {
        Box::new(HeaderBlock {
            method: Some(m.into()),
            path: Some(path.into()),
            authority: Some(auth.into()),
            scheme: Some(sch.into()),
            status: None,
            headers: h
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            credential: None,
        })
    };
    let mut secret = block(
        "POST",
        "https",
        "/v1beta/models/g:streamGenerateContent?alt=sse&key=REDACTED",
        "api.example.com",
        &[("content-type", "application/json")],
    );
    secret.credential = Some(crate::ids::key().id_u64("api_key", b"sk-h2-secret"));
    let events = vec![
        H2Event::Settings {
            header_table_size: Some(4096),
            max_frame_size: Some(16384),
        },
        H2Event::Headers {
            stream: 1,
            block: block("GET", "http", "/", "www.example.com", &[]),
        },
        H2Event::Headers {
            stream: 3,
            block: block(
                "GET",
                "http",
                "/",
                "www.example.com",
                &[("cache-control", "no-cache")],
            ),
        },
        H2Event::Data {
            stream: 1,
            data: Bytes::from_static(b"{\"a\":1}"),
        },
        H2Event::Data {
            stream: 3,
            data: Bytes::from_static(b"{\"b\":2}"),
        },
        H2Event::EndStream { stream: 1 },
        H2Event::Reset { stream: 3, code: 8 },
        H2Event::Headers {
            stream: 5,
            block: block(
                "GET",
                "https",
                "/index.html",
                "www.example.com",
                // `custom-key` has the word `key`: a secret header, dropped.
                &[],
            ),
        },
        H2Event::EndStream { stream: 5 },
        H2Event::Headers {
            stream: 7,
            block: secret,
        },
        H2Event::GoAway {
            last_stream: 7,
            code: 0,
        },
    ];
    (v, events)
}

/// Adjacent DATA pieces of one stream merged (their split depends on the pieces).
fn coalesce(events: Vec<H2Event>) -> Vec<H2Event> {
    let mut out: Vec<H2Event> = Vec::new();
    for ev in events {
        if let (
            Some(H2Event::Data {
                stream: s0,
                data: d0,
            }),
            H2Event::Data { stream, data },
        ) = (out.last_mut(), &ev)
            && s0 == stream
        {
            let mut v = d0.to_vec();
            v.extend_from_slice(data);
            *d0 = Bytes::from(v);
            continue;
        }
        out.push(ev);
    }
    out
}

fn run(side: Side, pieces: &[&[u8]]) -> (Vec<H2Event>, Result<(), H2Error>) {
    let mut p = H2Parser::new(side);
    let mut out = Vec::new();
    for piece in pieces {
        let r = p.feed(&Bytes::copy_from_slice(piece), &mut out);
        if r.is_err() {
            return (out, r);
        }
        assert!(p.buffered_bytes() <= MAX_HEADER_BLOCK * 3 + MAX_HPACK_TABLE);
    }
    (out, Ok(()))
}

#[test]
fn client_stream_whole() {
    let (bytes, want) = client_stream();
    let (got, r) = run(Side::Client, &[&bytes]);
    assert_eq!(r, Ok(()));
    assert_eq!(coalesce(got), want);
}

#[test]
fn client_stream_every_split_in_two_and_three() {
    let (bytes, want) = client_stream();
    for i in 0..=bytes.len() {
        let (got, r) = run(Side::Client, &[&bytes[..i], &bytes[i..]]);
        assert_eq!(r, Ok(()), "split at {i}");
        assert_eq!(coalesce(got), want, "split at {i}");
    }
    for i in (0..bytes.len()).step_by(7) {
        for j in i..=bytes.len() {
            let (got, r) = run(Side::Client, &[&bytes[..i], &bytes[i..j], &bytes[j..]]);
            assert_eq!(r, Ok(()), "split at {i}, {j}");
            assert_eq!(coalesce(got), want, "split at {i}, {j}");
        }
    }
    // One byte at a time.
    let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
    let (got, _) = run(Side::Client, &pieces);
    assert_eq!(coalesce(got), want);
}

#[test]
fn data_is_emitted_as_it_arrives() {
    let mut p = H2Parser::new(Side::Server);
    let mut out = Vec::new();
    let f = frame(DATA, END_STREAM, 1, b"data: one\n\ndata: two\n\n");
    p.feed(&Bytes::copy_from_slice(&f[..14]), &mut out)
        .expect("parses");
    assert_eq!(
        out,
        vec![H2Event::Data {
            stream: 1,
            data: Bytes::from_static(b"data:")
        }]
    );
    out.clear();
    p.feed(&Bytes::copy_from_slice(&f[14..]), &mut out)
        .expect("parses");
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], H2Event::EndStream { stream: 1 });
}

#[test]
fn the_credential_and_secret_headers_never_leave_the_parser() {
    let (bytes, events) = client_stream();
    let text = format!("{events:?}");
    for secret in [
        "sk-h2-secret",
        "AIza-q",
        "s3cr3t",
        "authorization",
        "cookie",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // The fingerprint is the HTTP/1 masker's for the same header.
    assert_eq!(
        crate::probes::scrub::credential_id(Some(b"Authorization"), b"Bearer sk-h2-secret"),
        Some(crate::ids::key().id_u64("api_key", b"sk-h2-secret"))
    );
    // A request whose only credential is the query key gets the key's fingerprint.
    let mut enc = Encoder::new();
    let b = enc.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":path", b"/v1/x?key=AIza%2Dq"),
    ]);
    let mut v = PREFACE.to_vec();
    v.extend(frame(HEADERS, END_HEADERS, 1, &b));
    let (got, _) = run(Side::Client, &[&v]);
    let H2Event::Headers { block, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(block.path.as_deref(), Some("/v1/x?key=REDACTED"));
    assert_eq!(
        block.credential,
        Some(crate::ids::key().id_u64("api_key", b"AIza-q"))
    );
    assert!(bytes.len() > 100);
}

#[test]
fn response_status_and_interim() {
    let mut enc = Encoder::new();
    let mut v = settings(&[(0x5, 1 << 20)]);
    v.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &enc.encode([(&b":status"[..], &b"103"[..])]),
    ));
    v.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &enc.encode([
            (&b":status"[..], &b"200"[..]),
            (b"content-type", b"text/event-stream"),
            (b"set-cookie", b"a=b"),
        ]),
    ));
    let (got, r) = run(Side::Server, &[&v]);
    assert_eq!(r, Ok(()));
    let H2Event::Headers { block, .. } = &got[2] else {
        panic!("{got:?}")
    };
    assert_eq!(block.status, Some(200));
    assert_eq!(
        block.headers,
        vec![("content-type".into(), "text/event-stream".into())]
    );
}

#[test]
fn failures_are_final() {
    // Not the preface.
    let (_, r) = run(Side::Client, &[b"PRI * HTTP/1.1\r\n\r\n"]);
    assert_eq!(r, Err(H2Error::NoPreface));
    // A frame over the receiver's max frame size; honoured once raised.
    let big = frame(DATA, 0, 1, &vec![0; 20_000]);
    let (_, r) = run(Side::Server, &[&big]);
    assert_eq!(r, Err(H2Error::FrameTooLarge));
    let mut p = H2Parser::new(Side::Server);
    p.set_max_frame_size(1 << 20);
    let mut out = Vec::new();
    assert_eq!(p.feed(&Bytes::from(big), &mut out), Ok(()));
    // A header block past the cap (CONTINUATIONs of 16 KiB each).
    let mut v = frame(HEADERS, 0, 1, &[0x82; 16_000]);
    for _ in 0..5 {
        v.extend(frame(CONTINUATION, 0, 1, &[0x82; 16_000]));
    }
    let (_, r) = run(Side::Server, &[&v]);
    assert_eq!(r, Err(H2Error::HeaderBlockTooLarge));
    // A frame between HEADERS and its CONTINUATION.
    let mut v = frame(HEADERS, 0, 1, &[0x82]);
    v.extend(frame(DATA, 0, 1, b"x"));
    let (_, r) = run(Side::Server, &[&v]);
    assert!(matches!(r, Err(H2Error::Malformed(_))));
    // Bad HPACK: an index past both tables.
    let (_, r) = run(
        Side::Server,
        &[&frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f])],
    );
    assert_eq!(r, Err(H2Error::Hpack));
    // A table size update past what SETTINGS allow.
    let (_, r) = run(
        Side::Server,
        &[&frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0x3f, 0xe1, 0xff, 0x03, 0x82],
        )],
    );
    assert_eq!(r, Err(H2Error::Hpack));
    // A gap, and the parser stays failed.
    let mut p = H2Parser::new(Side::Server);
    let mut out = Vec::new();
    assert_eq!(p.feed_gap(10), Err(H2Error::Gap));
    assert_eq!(
        p.feed(&Bytes::from(settings(&[])), &mut out),
        Err(H2Error::Gap)
    );
    assert!(out.is_empty());
    // A failed parser holds nothing: its buffers and HPACK table are zeroed and freed.
    assert_eq!(p.buffered_bytes(), 0);
}

#[test]
fn a_decoded_head_is_bounded() {
    // One small entry in the table, referenced 10 000 times: kept fields and bytes are capped.
    let mut block = Encoder::new().encode([(&b"x-foo"[..], &b"bar"[..])]);
    block.extend(std::iter::repeat_n(0xbe, 10_000));
    let (got, r) = run(Side::Server, &[&frame(HEADERS, END_HEADERS, 1, &block)]);
    assert_eq!(r, Ok(()));
    let H2Event::Headers { block, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(block.headers.len(), MAX_HEADERS);
}
