//! `sitio health`: asks a running sitio's admin port whether it is live (or
//! ready), for container health checks. The image has no shell and no curl,
//! so the binary itself is the probe (`HEALTHCHECK CMD ["/sitio", "health"]`).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Longer than any answer of /live or /ready takes, shorter than Docker's
/// default health-check timeout (30 s), so a hung sitio is reported by us.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Exit 0 when `GET path` on 127.0.0.1:`admin_port` answers 2xx, 1 when it
/// answers otherwise or not at all (the reason on stderr).
pub(crate) fn check(admin_port: u16, path: &str) -> ExitCode {
    match status(admin_port, path) {
        Ok(code) if (200..300).contains(&code) => ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("sitio: health: GET {path} on port {admin_port} answered {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("sitio: health: GET {path} on port {admin_port}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(port: u16, path: &str) -> std::io::Result<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    // The status line is all we need: "HTTP/1.1 200 ...".
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let code = std::str::from_utf8(&head[9..12])
        .ok()
        .filter(|_| head.starts_with(b"HTTP/1."))
        .and_then(|c| c.parse().ok());
    code.ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}
