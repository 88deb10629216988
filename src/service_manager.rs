//! Telling systemd how the process is doing (`Type=notify` units in `ops/systemd/`).
//!
//! READY=1 once every role of the process runs (its listeners bound, its consumers
//! started), so `systemctl start` returns only when pampa serves, and units ordered
//! after it start after that; WATCHDOG=1 from a task on the async runtime at half the
//! unit's `WatchdogSec`, so a process whose runtime hangs stops pinging and is
//! restarted; STOPPING=1 when a shutdown begins. Outside systemd (no `NOTIFY_SOCKET`)
//! all of this does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// Says READY=1 and starts the watchdog pings when the unit asks for them.
pub fn ready() {
    notify(&[NotifyState::Ready]);
    if let Some(every) = watchdog_interval() {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// Half the unit's watchdog timeout, when it has one for this process. As libsystemd's
/// `sd_watchdog_enabled`: `WATCHDOG_USEC` set, and `WATCHDOG_PID` unset or this
/// process (the crate's own check insists on `WATCHDOG_PID`, which a supervisor other
/// than systemd may not set).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Says STOPPING=1: the process is shutting down on purpose.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

fn notify(state: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(false, state) {
        tracing::warn!(%error, "Could not notify the service manager.");
    }
}
