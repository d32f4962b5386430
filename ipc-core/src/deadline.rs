//! Deadlines: every bounded wait of the crate (futex, poll, child exit, handshakes) measures
//! what is left the same way, here. A leaf: it imports no other module of the crate.
//!
//! A deadline is an `Instant` (`None`: wait forever). Kernel calls take what is left as a
//! `Timespec`, which is recomputed at each retry, so an `EINTR` or an early return never
//! stretches a wait past its deadline, and `poll`'s rounding never ends one early.

use std::time::{Duration, Instant};

use rustix::event::{PollFd, Timespec, poll};
use rustix::io::Errno;

/// `now + timeout`, saturating a century ahead instead of overflowing.
pub(crate) fn after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A `Duration` as a `Timespec`, saturating at the largest representable value.
pub(crate) fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// What is left until `deadline`, as a `Timespec` (zero once it has passed).
pub(crate) fn timespec_until(deadline: Instant) -> Timespec {
    timespec(deadline.saturating_duration_since(Instant::now()))
}

/// Polls `fds` until one is ready or `deadline` passes; retries `EINTR` with the time left.
///
/// Returns the number of ready entries (0 only when the deadline passed). `None` waits forever.
pub(crate) fn poll_until(
    fds: &mut [PollFd<'_>],
    deadline: Option<Instant>,
) -> std::io::Result<usize> {
    loop {
        let ts = deadline.map(timespec_until);
        match poll(fds, ts.as_ref()) {
            // `poll` may round a timeout down; only report "nothing ready" once the deadline
            // has really passed, so callers can rely on having waited at least that long.
            Ok(0) if deadline.is_some_and(|d| Instant::now() < d) => continue,
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_saturates() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now);
    }
}
