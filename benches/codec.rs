//! The service connection's HTTP/1 codec (`src/upstream/h1`): what reading
//! one response and writing one request cost, without sockets. The whole
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

fn read_response(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec_read_response");
    for (name, input) in [
        ("nginx 100-byte file", NGINX),
        ("chunked, two chunks", CHUNKED),
    ] {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        group.bench_function(name, |b| {
            b.iter(|| codec::read_response(&mut buf, black_box(input)))
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

criterion_group!(benches, read_response, write_request);
criterion_main!(benches);
