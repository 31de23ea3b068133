//! A scripted raw-socket origin: it records every byte it receives and
//! answers each request with bytes the test writes, so a test can see exactly
//! what sitio forwards and send back what no well-behaved server would.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// When the scripted answer goes out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// After the whole request body was read (the usual server).
    AfterBody,
    /// As soon as the head arrived, before the body (nginx `return 200`, many
    /// app servers); the body is read and dropped afterwards.
    AtHead,
}

/// A running origin; its task ends when dropped.
pub struct Origin {
    pub port: u16,
    /// Every connection's received bytes, in accept order.
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Script = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

impl Origin {
    /// Answers each request with `respond(head)`.
    pub async fn start(
        when: Answer,
        respond: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let log = received.clone();
        let respond: Script = Arc::new(respond);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                let index = {
                    let mut l = log.lock().unwrap();
                    l.push(Vec::new());
                    l.len() - 1
                };
                conns.spawn(serve(s, when, respond.clone(), log.clone(), index));
            }
        });
        Origin {
            port,
            received,
            task,
        }
    }

    /// All bytes received on connection `i`, as text.
    pub fn connection(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()[i]).into_owned()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// An answer with a small body.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn serve(
    mut s: TcpStream,
    when: Answer,
    respond: Script,
    log: Arc<Mutex<Vec<Vec<u8>>>>,
    index: usize,
) {
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_until(&mut s, &mut buf, &log, index, b"\r\n\r\n").await else {
            return;
        };
        let head = buf[..head_end].to_vec();
        buf.drain(..head_end);
        if when == Answer::AtHead && s.write_all(&respond(&head)).await.is_err() {
            return;
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if text.contains("transfer-encoding: chunked") {
            let Some(end) = read_until(&mut s, &mut buf, &log, index, b"0\r\n\r\n").await else {
                return;
            };
            buf.drain(..end);
        } else if let Some(len) = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            while buf.len() < len {
                if !read_more(&mut s, &mut buf, &log, index).await {
                    return;
                }
            }
            buf.drain(..len);
        }
        if when == Answer::AfterBody && s.write_all(&respond(&head)).await.is_err() {
            return;
        }
        if text.contains("connection: close") {
            return;
        }
    }
}

/// Reads until `marker` is in `buf`; returns the index just past it.
async fn read_until(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    log: &Mutex<Vec<Vec<u8>>>,
    index: usize,
    marker: &[u8],
) -> Option<usize> {
    loop {
        if let Some(p) = buf.windows(marker.len()).position(|w| w == marker) {
            return Some(p + marker.len());
        }
        if !read_more(s, buf, log, index).await {
            return None;
        }
    }
}

async fn read_more(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    log: &Mutex<Vec<Vec<u8>>>,
    index: usize,
) -> bool {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            log.lock().unwrap()[index].extend_from_slice(&chunk[..n]);
            true
        }
    }
}
