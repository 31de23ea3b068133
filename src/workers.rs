//! Thread per core, nginx's model: `SITIO_WORKERS=N` serves clients on N
//! single-threaded runtimes. The caller's runtime is worker 0 (it also runs
//! the admin server and background tasks); each other worker is a thread
//! with its own current-thread runtime and its own listening socket, so a
//! connection, its exchanges and its service connection stay on one core
//! with no work stealing, cross-thread wake-ups or shared run queue.
//!
//! The kernel spreads new clients across the workers' sockets (SO_REUSEPORT,
//! by a hash of the client's address and port). What workers share is read
//! mostly or sharded per thread (statistics, the service connection pool);
//! the connection cap is one semaphore.

use std::net::SocketAddr;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::connection::Acceptor;
use crate::error::StartError;

/// The worker threads beyond the caller's.
pub(crate) struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    quit: watch::Sender<bool>,
    /// Closed once every worker stopped accepting (each holds a sender
    /// until its listening socket is closed).
    accepting: mpsc::Receiver<()>,
}

/// Starts `count - 1` worker threads (none for one worker), each accepting
/// on a socket of its own joined to `listener`'s port, until the acceptor's
/// stop turns true; each then serves its open connections until
/// [`Workers::finish`].
pub(crate) fn start(
    listener: &TcpListener,
    count: usize,
    acceptor: &Acceptor,
) -> Result<Workers, StartError> {
    let (quit, _) = watch::channel(false);
    let (accepting, accepting_rx) = mpsc::channel(1);
    let mut workers = Workers {
        threads: Vec::new(),
        quit,
        accepting: accepting_rx,
    };
    // The caller's thread is worker 0 when its runtime keeps tasks on it.
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if flavor == tokio::runtime::RuntimeFlavor::CurrentThread {
        crate::upstream::pin_worker(0);
    }
    if count <= 1 {
        return Ok(workers);
    }
    let sockets = join_port(listener, count - 1).map_err(|e| {
        StartError::Io(
            "SITIO_WORKERS: cannot open a listening socket per worker".into(),
            e,
        )
    })?;
    for (n, socket) in sockets.into_iter().enumerate() {
        let mut acceptor = acceptor.clone();
        acceptor.worker = n + 1;
        let quit = workers.quit.subscribe();
        let accepting = accepting.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sitio-worker-{}", n + 1))
            .spawn(move || work(n + 1, socket, acceptor, (accepting, quit)))
            .map_err(|e| StartError::Io("SITIO_WORKERS: cannot start a worker thread".into(), e))?;
        workers.threads.push(thread);
    }
    Ok(workers)
}

/// One worker thread: accept until the drain begins (then drop `accepting`),
/// serve until told to quit.
fn work(
    index: usize,
    socket: std::net::TcpListener,
    acceptor: Acceptor,
    (accepting, mut quit): (mpsc::Sender<()>, watch::Receiver<bool>),
) {
    crate::upstream::pin_worker(index);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "a worker cannot start its runtime; the others serve");
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "a worker cannot listen; the others serve");
                return;
            }
        };
        let mut stop = acceptor.instance.stop.clone();
        acceptor
            .accept(&listener, async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
            .await;
        // Closed at once: clients queued on this socket move to another of
        // the port's (`tcp_migrate_req`) or are refused now, rather than
        // left waiting.
        drop(listener);
        drop(accepting);
        let _ = quit.wait_for(|q| *q).await;
    });
    // Dropping the runtime ends what outlived the drain time.
}

impl Workers {
    /// Resolves once every worker stopped accepting: no connection is
    /// spawned on a worker after this. The drain waits for it before it
    /// waits for the connections: a client a worker accepted after that
    /// wait found none left would be dropped unserved when the worker
    /// quits (a reset, seen in rolling restarts under load).
    pub(crate) async fn stopped_accepting(&mut self) {
        let _ = self.accepting.recv().await;
    }

    /// After the drain: ends every worker (closing what is still open) and
    /// waits for its thread, so nothing of this instance outlives `run`.
    pub(crate) async fn finish(self) {
        let _ = self.quit.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// `count` more listening sockets on `listener`'s address, joined to it with
/// SO_REUSEPORT. `listener` was bound without that option, so a port already
/// in use still stopped startup (the port guard); it gets the option only
/// now that the port is ours, and a process that does not ask for sharing
/// still cannot bind the port.
fn join_port(listener: &TcpListener, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = SockRef::from(listener);
    first.set_reuse_port(true)?;
    let addr: SocketAddr = listener.local_addr()?;
    let domain = Domain::for_address(addr);
    let only_v6 = if domain == Domain::IPV6 {
        Some(first.only_v6()?)
    } else {
        None
    };
    (0..count)
        .map(|_| {
            let s = Socket::new(domain, Type::STREAM, None)?;
            if let Some(only) = only_v6 {
                s.set_only_v6(only)?;
            }
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
            s.listen(1024)?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        })
        .collect()
}
