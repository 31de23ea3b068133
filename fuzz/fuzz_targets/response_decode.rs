//! The service connection's HTTP/1 codec on arbitrary service bytes: never
//! panics, how the bytes were split into reads never changes what it
//! decodes (or whether it refuses them), and the head read for the client
//! with its hop-by-hop fields noted as they pass is the one the whole
//! field map and `to_client` give.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let head_request = first & 0x80 != 0;
    let piece = usize::from(first & 0x7f).max(1);
    let whole = sitio::fuzzing::decode_response(input, usize::MAX, head_request);
    let split = sitio::fuzzing::decode_response(input, piece, head_request);
    assert_eq!(whole, split, "in reads of {piece} bytes");
    if let Err(e) = sitio::fuzzing::response_head_alike(input, head_request) {
        panic!("{e}");
    }
});
