//! The service behind every proxy in `bench/h2.py`: h2c with prior
//! knowledge on `127.0.0.1:$PORT`, one thread (pinned by the bench). A gRPC
//! call (`content-type: application/grpc…`) gets one 5-byte message
//! ("hello") and a `grpc-status: 0` trailer, as a unary gRPC method
//! answers; anything else gets 100 bytes. Request bodies are read to their
//! end first, as a service would.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Frames = std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>;

mod futures_iter {
    //! `futures::stream::iter` without the futures crate.
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Iter<I>(pub I);

    impl<I: Iterator + Unpin> hyper::body::Body for Iter<I>
    where
        I::Item: Into<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>>,
    {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Ready(self.0.next().map(Into::into))
        }
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<futures_iter::Iter<Frames>>, Infallible> {
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let _ = req.into_body().collect().await;
    let frames = if grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        vec![
            Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x05hello"))),
            Ok(Frame::trailers(trailers)),
        ]
    } else {
        vec![Ok(Frame::data(Bytes::from_static(&[b'x'; 100])))]
    };
    let mut res = Response::new(futures_iter::Iter(frames.into_iter()));
    if grpc {
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
    }
    Ok(res)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8087);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_streams(1000)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                .await;
        });
    }
}
