//! Telling systemd how l4lb is doing (sd_notify(3), for `Type=notify`
//! units): `READY=1` once the ports are up, the workers hold the first
//! forwarding state and the control socket listens; `STATUS=` lines; a
//! reload's `RELOADING=1` … `READY=1`; `STOPPING=1` when the graceful stop
//! begins; `WATCHDOG=1` from the management loop at half the unit's
//! `WatchdogSec`, so a management core that stops turning is restarted.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The management loop's link to systemd.
pub struct Notifier {
    /// How often to pet the watchdog (none: no watchdog asked for).
    watchdog_every: Option<Duration>,
    last_pet: Instant,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

impl Notifier {
    pub fn new() -> Notifier {
        let watchdog_every = sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(100)));
        Notifier { watchdog_every, last_pet: Instant::now() }
    }

    fn send(states: &[NotifyState<'_>]) {
        // A systemd that cannot be told (its socket gone) is no reason to stop
        // balancing; it notices on its own.
        if let Err(e) = sd_notify::notify(states) {
            log::debug!("sd_notify: {e}");
        }
    }

    /// The service is up: `status` says what it serves.
    pub fn ready(&self, status: &str) {
        Self::send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload begins; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        Self::send(&[NotifyState::Reloading]);
    }

    /// The graceful stop begins (withdraw, drain, exit).
    pub fn stopping(&self, status: &str) {
        Self::send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Called every turn of the management loop: pets the watchdog when due.
    pub fn tick(&mut self) {
        let Some(every) = self.watchdog_every else { return };
        if self.last_pet.elapsed() >= every {
            self.last_pet = Instant::now();
            Self::send(&[NotifyState::Watchdog]);
        }
    }
}
