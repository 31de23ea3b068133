//! Frame-level HTTP/2 cases (`tests/backends/h2_conformance.py`, the h2
//! library with its own checks off): what sitio does with frames and
//! requests a broken or unruly client sends, and that none of them reaches
//! the service.

use sitio::Decorators;
use sitio::config::TargetProtocol;

use crate::common::backend::Backend;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_http2_frames_and_requests_get_the_answers_the_rfc_asks_for() {
    let backend = Backend::start().await;
    let mut config = config_for(backend.port());
    config.target_protocol = TargetProtocol::Http1;
    let sitio = Sitio::start(config, Decorators::none()).await;
    let cases = [
        // RFC 9113 §4.2: a frame over SETTINGS_MAX_FRAME_SIZE.
        ("frame-size", "GOAWAY FRAME_SIZE_ERROR"),
        // §5.1.2: past SETTINGS_MAX_CONCURRENT_STREAMS (100).
        ("streams", "100 answered 200, 1 REFUSED_STREAM"),
        // §8.2.2: connection-specific fields make a request malformed.
        ("connection-header", "RESET PROTOCOL_ERROR"),
        // §8.2: field names must be lower case (the h2 crate ends the
        // whole connection, stricter than the stream error the RFC allows).
        ("uppercase", "GOAWAY PROTOCOL_ERROR"),
        // A header list over SITIO_MAX_HEADER_BYTES.
        ("big-header", "STATUS 431 0"),
        // Request trailers pass on to the service with the body.
        ("trailers", "STATUS 200 10"),
    ];
    let port = sitio.addr.port().to_string();
    let args = ["127.0.0.1", port.as_str()]
        .into_iter()
        .chain(cases.iter().map(|(case, _)| *case));
    let printed = run_script("h2_conformance.py", args).await;
    let expected: String = cases
        .iter()
        .map(|(case, outcome)| format!("{case} {outcome}\n"))
        .collect();
    assert_eq!(printed, expected);
    assert_eq!(
        backend.requests(),
        101,
        "only the 100 accepted streams and the request with trailers reached the service"
    );
    sitio.stop().await;
}
