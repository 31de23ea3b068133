//! Deadlines on the connection's hot path. Keep-alive requests and body
//! bytes push their deadlines back all the time; moving a timer in Tokio's
//! wheel each time costs more than the rare early wake-up, so deadlines move
//! later for free and the timer catches up when it fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A deadline that moves later for free. Every keep-alive request pushes the
/// idle deadline back; updating the timer wheel each time costs more than the
/// rare early wake-up, so the timer is re-armed only when the deadline moves
/// earlier, or when it fires before the deadline (then to the deadline).
pub(crate) struct LazyDeadline {
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
    due: Instant,
}

impl LazyDeadline {
    pub(crate) fn new(due: Instant) -> Self {
        LazyDeadline {
            sleep: Box::pin(tokio::time::sleep_until(due)),
            armed: due,
            due,
        }
    }

    pub(crate) fn set(&mut self, due: Instant) {
        self.due = due;
        if due < self.armed {
            self.sleep.as_mut().reset(due);
            self.armed = due;
        }
    }

    /// Ready once the deadline has passed (registering the waker otherwise).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            if Instant::now() >= self.due {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(self.due);
            self.armed = self.due;
        }
    }
}

/// A deadline for waits that come one after another, such as each exchange's
/// wait for the service's response head on one HTTP/1 connection: each wait
/// [`restart`](Self::restart)s it, and one [`LazyDeadline`] serves them all.
/// A timer of each wait's own would enter Tokio's wheel and leave it again
/// every request (about 500 instructions per request in callgrind). The lock
/// is the connection's own, never contended: its waits do not overlap.
#[derive(Default)]
pub(crate) struct Reused(Mutex<Option<LazyDeadline>>);

impl Reused {
    /// A wait starts: it ends at `due`.
    pub(crate) fn restart(&self, due: Instant) {
        let mut deadline = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match deadline.as_mut() {
            Some(deadline) => deadline.set(due),
            None => *deadline = Some(LazyDeadline::new(due)),
        }
    }

    /// Ready once the last wait's deadline passed (registering the waker
    /// otherwise); never before the first [`restart`](Self::restart).
    pub(crate) fn poll_expired(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut deadline = self.0.lock().unwrap_or_else(|e| e.into_inner());
        deadline
            .as_mut()
            .map_or(Poll::Pending, |d| d.poll_expired(cx))
    }
}

/// A timeout on progress: it starts when a wait starts, every bit of
/// progress restarts it (for free, see [`LazyDeadline`]), and it stops when
/// the wait ends. The timer is allocated on first use and kept.
pub(crate) struct Stall {
    timeout: Duration,
    deadline: Option<LazyDeadline>,
    running: bool,
}

impl Stall {
    pub(crate) fn new(timeout: Duration) -> Self {
        Stall {
            timeout,
            deadline: None,
            running: false,
        }
    }

    /// Starts the clock, unless it already runs.
    pub(crate) fn start(&mut self) {
        if !self.running {
            self.progress();
        }
    }

    /// Progress was made: the clock restarts.
    pub(crate) fn progress(&mut self) {
        let due = Instant::now() + self.timeout;
        match &mut self.deadline {
            Some(deadline) => deadline.set(due),
            None => self.deadline = Some(LazyDeadline::new(due)),
        }
        self.running = true;
    }

    /// The wait is over.
    pub(crate) fn stop(&mut self) {
        self.running = false;
    }

    /// True once the clock ran out (registering the waker otherwise).
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.running
            && self
                .deadline
                .as_mut()
                .is_some_and(|d| d.poll_expired(cx).is_ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn expired_within(deadline: &mut LazyDeadline, wait: Duration) -> bool {
        tokio::time::timeout(wait, std::future::poll_fn(|cx| deadline.poll_expired(cx)))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_deadline_moved_later_fires_at_the_later_time_not_the_first() {
        let start = Instant::now();
        let mut deadline = LazyDeadline::new(start + Duration::from_millis(40));
        deadline.set(start + Duration::from_millis(300));
        // The timer still fires at 40 ms, finds the deadline ahead, re-arms.
        assert!(!expired_within(&mut deadline, Duration::from_millis(150)).await);
        assert!(expired_within(&mut deadline, Duration::from_secs(5)).await);
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_stall_restarted_by_progress_runs_out_only_after_the_last_progress() {
        let mut stall = Stall::new(Duration::from_millis(200));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        stall.start();
        tokio::time::sleep(Duration::from_millis(120)).await;
        stall.progress();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(!stall.expired(&mut cx), "progress 120 ms ago");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(stall.expired(&mut cx));
        stall.stop();
        assert!(!stall.expired(&mut cx), "a stopped clock never runs out");
    }

    #[tokio::test]
    async fn a_reused_deadline_holds_each_wait_to_its_own_time() {
        let reused = Reused::default();
        let start = Instant::now();
        let expired =
            |wait| tokio::time::timeout(wait, std::future::poll_fn(|cx| reused.poll_expired(cx)));
        assert!(
            expired(Duration::from_millis(50)).await.is_err(),
            "never started"
        );
        reused.restart(start + Duration::from_millis(100));
        // A second wait, later: the first one's time no longer counts.
        reused.restart(start + Duration::from_millis(400));
        assert!(expired(Duration::from_millis(200)).await.is_err());
        assert!(expired(Duration::from_secs(5)).await.is_ok());
        assert!(start.elapsed() >= Duration::from_millis(400));
        // A shorter wait after it: its own time, not the one before.
        let again = Instant::now();
        reused.restart(again + Duration::from_millis(30));
        assert!(expired(Duration::from_secs(5)).await.is_ok());
        assert!(again.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_deadline_moved_earlier_fires_early() {
        let start = Instant::now();
        let mut deadline = LazyDeadline::new(start + Duration::from_secs(60));
        deadline.set(start + Duration::from_millis(30));
        assert!(expired_within(&mut deadline, Duration::from_secs(5)).await);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
