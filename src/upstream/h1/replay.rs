//! The codec run over bytes in memory, as the service connection runs it
//! over a socket: the differential tests and the `response_decode` fuzz
//! target feed it the same bytes split in different ways.

use bytes::BytesMut;

use super::decode::{BodyDecoder, parse_head};

/// A response as the codec read it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Replayed {
    /// The final status (interim responses skipped, as the client does).
    pub(crate) status: u16,
    /// Header fields in order, names lowercase.
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Vec<(String, Vec<u8>)>,
    /// The connection could carry another exchange after this one.
    pub(crate) keep_alive: bool,
}

/// Decodes the response in `input`, delivered in reads of at most `piece`
/// bytes and followed by the end of the stream; `head_request`: it answers
/// a HEAD. `Err` holds why the bytes are not a complete response.
pub(crate) fn replay(input: &[u8], piece: usize, head_request: bool) -> Result<Replayed, String> {
    let piece = piece.max(1);
    let mut rest = input;
    let mut buf = BytesMut::new();
    let mut feed = |buf: &mut BytesMut| {
        let n = piece.min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        n > 0
    };
    let head = loop {
        match parse_head(&mut buf, head_request, super::READ_SIZE, None)
            .map_err(|e| e.to_string())?
        {
            Some(head) if head.is_interim() => {}
            Some(head) => break head,
            None if !feed(&mut buf) => return Err("closed before a whole head".into()),
            None => {}
        }
    };
    let mut decoder = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    let mut keep_alive = head.keep_alive;
    while !decoder.is_done() {
        match decoder.next(&mut buf).map_err(|e| e.to_string())? {
            Some(frame) => match frame.into_data() {
                Ok(data) => body.extend_from_slice(&data),
                Err(frame) => trailers.extend(fields(frame.trailers_ref().into_iter().flatten())),
            },
            None if decoder.is_done() => {}
            None if !feed(&mut buf) => {
                decoder.at_eof().map_err(|e| e.to_string())?;
                keep_alive = false;
            }
            None => {}
        }
    }
    keep_alive &= buf.is_empty() && rest.is_empty();
    Ok(Replayed {
        status: head.parts.status.as_u16(),
        headers: fields(&head.parts.headers),
        body,
        trailers,
        keep_alive,
    })
}

fn fields<'a>(
    map: impl IntoIterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
) -> Vec<(String, Vec<u8>)> {
    map.into_iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// One response already whole in `buf`, read as `send` and the body do
/// (for the codec's benchmark): its body length. `for_client`: read for the
/// client (`as_lines`, and the map it reads into and gives back, as the
/// exchange does).
pub(crate) fn read_once(
    buf: &mut BytesMut,
    for_client: Option<(bool, &mut Option<http::HeaderMap>)>,
) -> usize {
    let mut none = None;
    let (reading, spare) = match for_client {
        Some((as_lines, spare)) => (Some(as_lines), spare),
        None => (None, &mut none),
    };
    let for_client = reading.map(|as_lines| super::decode::ForClient {
        spare: &mut *spare,
        as_lines,
    });
    let parsed = parse_head(buf, false, super::READ_SIZE, for_client);
    let head = match parsed {
        Ok(Some(head)) => head,
        other => panic!("not a whole response: {other:?}"),
    };
    let mut decoder = BodyDecoder::new(head.framing);
    let mut len = 0;
    while let Ok(Some(frame)) = decoder.next(buf) {
        len += frame.data_ref().map_or(0, |d| d.len());
    }
    assert!(decoder.is_done(), "the body was whole");
    let mut head = std::hint::black_box(head);
    if reading.is_some() {
        head.parts.headers.clear();
        *spare = Some(head.parts.headers);
    }
    len
}

/// A request head encoded as `send` writes it (for the codec's benchmark).
pub(crate) fn encode_once(head: http::request::Parts) -> usize {
    encode_head(head, Some(0)).len()
}

/// The head `send` writes for `head` with a body of `len` bytes (`None`:
/// of unknown length), edited for the service already.
pub(crate) fn encode_head(head: http::request::Parts, len: Option<usize>) -> bytes::Bytes {
    encode_with(head, len, None)
}

/// [`encode_head`], or with the head already made as bytes (`splice`).
pub(crate) fn encode_with(
    head: http::request::Parts,
    len: Option<usize>,
    wire: Option<bytes::Bytes>,
) -> bytes::Bytes {
    use http_body_util::BodyExt;
    let data = bytes::Bytes::from(vec![b'x'; len.unwrap_or(5)]);
    let made = match len {
        Some(_) => http_body_util::Full::new(data)
            .map_err(|e: std::convert::Infallible| match e {})
            .boxed_unsync(),
        // A stream says nothing of its length.
        None => {
            let frames = [Ok(hyper::body::Frame::data(data))];
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
        }
    };
    let body = crate::upstream::RequestBody::new(
        crate::upstream::Source::Made(made),
        None,
        Default::default(),
    )
    .0;
    match wire {
        Some(wire) => super::Message::spliced(wire, head, body).head,
        None => super::Message::new(head, body).head,
    }
}
