//! sitio's own HTTP/1 codec: on the service connection (`src/upstream/h1`),
//! what reading one response and writing one request cost; on the client
//! connection (`src/h1`), reading one request head, a chunked request
//! body (`src/chunked`) and writing one response head. Without sockets. The whole
//! proxy against its peers is `bench/run.sh`; instructions per proxied
//! request are `bench/callgrind.py`.
//!
//! `cargo bench --features fuzzing --bench codec` (the codec is internal;
//! the `fuzzing` feature exposes it, as it does for `fuzz/`).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use sitio::fuzzing::codec;

/// What nginx answers for a 100-byte file (the benchmarks' service).
const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 14:00:00 GMT\r\n\
Content-Type: text/plain\r\nContent-Length: 100\r\nLast-Modified: Wed, 02 Dec 2026 13:00:00 GMT\r\n\
Connection: keep-alive\r\nETag: \"692f2b10-64\"\r\nAccept-Ranges: bytes\r\n\r\n\
xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";

const CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
20\r\n{\"items\":[1,2,3,4,5,6,7,8,9,10]}\r\n20\r\n{\"items\":[1,2,3,4,5,6,7,8,9,10]}\r\n0\r\n\r\n";

/// One benchmark per input of `group`, each read into a reused buffer.
fn reads(
    c: &mut Criterion,
    group: &str,
    inputs: [(&str, &[u8]); 2],
    read: fn(&mut BytesMut, &[u8]) -> usize,
) {
    let mut group = c.benchmark_group(group);
    for (name, input) in inputs {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        group.bench_function(name, |b| b.iter(|| read(&mut buf, black_box(input))));
    }
    group.finish();
}

fn read_response(c: &mut Criterion) {
    let inputs = [
        ("nginx 100-byte file", NGINX),
        ("chunked, two chunks", CHUNKED),
    ];
    reads(c, "codec_read_response", inputs, codec::read_response);
    let inputs = [
        ("nginx 100-byte file, into a map", NGINX),
        ("nginx 100-byte file, as lines", NGINX),
    ];
    let mut group = c.benchmark_group("codec_read_response_for_client");
    for ((name, input), as_lines) in inputs.into_iter().zip([false, true]) {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut spare = None;
        group.bench_function(name, |b| {
            b.iter(|| {
                codec::read_response_for_client(&mut buf, black_box(input), as_lines, &mut spare)
            })
        });
    }
    group.finish();
}

fn write_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec_write_request");
    let (head, ()) = http::Request::get("/hello.txt?lang=en")
        .header("host", "127.0.0.1:8087")
        .header("user-agent", "wrk")
        .header("accept", "*/*")
        .header("x-forwarded-for", "127.0.0.1")
        .header("x-forwarded-proto", "http")
        .body(())
        .expect("a valid request")
        .into_parts();
    group.bench_function("GET, five fields", |b| {
        b.iter(|| codec::write_request(black_box(head.clone())))
    });
    group.finish();
}

/// What wrk and a browser send.
const WRK: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
const BROWSER: &[u8] = b"GET /photos/1.svg?size=large HTTP/1.1\r\nHost: photos.example\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: image/avif,image/webp,*/*\r\nAccept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\
Referer: https://photos.example/albums/7\r\nCookie: session=3f9a1c; theme=dark\r\n\r\n";

fn write_response_head(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec_write_response");
    // nginx's answer for a 100-byte file as the client gets it (the
    // connection field is hop-by-hop, gone).
    let (mut head, ()) = http::Response::builder()
        .header("server", "nginx/1.22.1")
        .header("date", "Wed, 02 Dec 2026 14:00:00 GMT")
        .header("content-type", "text/plain")
        .header("content-length", "100")
        .header("last-modified", "Wed, 02 Dec 2026 13:00:00 GMT")
        .header("etag", "\"692f2b10-64\"")
        .header("accept-ranges", "bytes")
        .body(())
        .expect("a valid response")
        .into_parts();
    let mut out = Vec::with_capacity(1024);
    // A keep-alive HTTP/1.1 answer leaves the head as it is: the same one
    // serves every iteration.
    group.bench_function("nginx 100-byte file, seven fields", |b| {
        b.iter(|| codec::write_response_head(black_box(&mut head), 100, &mut out))
    });
    // The same head read as the client's lines (no decorator reads it).
    let lines = codec::read_lines_head(NGINX);
    group.bench_function("nginx 100-byte file, as lines", |b| {
        b.iter(|| codec::write_response_lines(black_box(&lines), 100, &mut out))
    });
    group.finish();
}

fn read_request_head(c: &mut Criterion) {
    let inputs = [
        ("wrk, one field", WRK),
        ("a browser, eight fields", BROWSER),
    ];
    reads(
        c,
        "codec_read_request_head",
        inputs,
        codec::read_request_head,
    );
}

/// A client's head read and made into the one the service gets: through
/// the field map (`to_upstream`, then encoded), or as the client's bytes
/// (`splice`, when no decorator has request hooks).
fn forward_request_head(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec_forward_request_head");
    for (name, input) in [("wrk", WRK), ("a browser", BROWSER)] {
        for (way, as_bytes) in [("through the map", false), ("as bytes", true)] {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            group.bench_function(format!("{name}, {way}"), |b| {
                b.iter(|| codec::forward_request_head(&mut buf, black_box(input), as_bytes))
            });
        }
    }
    group.finish();
}

/// A chunked request body as sitio's own server side reads it.
fn read_chunked_body(c: &mut Criterion) {
    let upload = format!(
        "200\r\n{}\r\n200\r\n{}\r\n0\r\n\r\n",
        "u".repeat(512),
        "v".repeat(512)
    );
    let small: String = (0..16)
        .map(|i| format!("{:x};n={i}\r\n{}\r\n", 40 + i, "w".repeat(40 + i)))
        .collect();
    let small = format!("{small}0\r\nX-Checksum: 1f2e\r\n\r\n");
    let inputs = [
        ("1 KiB in two chunks", upload.as_bytes()),
        (
            "16 small chunks with extensions, trailers",
            small.as_bytes(),
        ),
    ];
    reads(
        c,
        "codec_read_chunked_body",
        inputs,
        codec::read_chunked_body,
    );
}

criterion_group!(
    benches,
    read_response,
    read_chunked_body,
    write_request,
    read_request_head,
    forward_request_head,
    write_response_head
);
criterion_main!(benches);
