//! Command checks (keepalived's MISC_CHECK): a program, run without a shell,
//! with the backend in its environment; exit status 0 passes. At the
//! timeout its whole process group is killed (what it started goes too),
//! and the check fails.
//!
//! Environment: `L4LB_BACKEND` (the address), `L4LB_BACKEND_PORT` (the
//! check's port), `L4LB_SERVICE`, `L4LB_VIP`. Its output is discarded.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::{CheckError, Probe};

/// How often a running check's program is looked at.
const POLL: Duration = Duration::from_millis(5);

impl Probe {
    pub(super) fn command(&self, deadline: Instant) -> Result<Duration, CheckError> {
        let Some((program, args)) = self.command.split_first() else {
            return Err(CheckError::NotRun("no command to run".into()));
        };
        let start = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .env("L4LB_BACKEND", self.addr.to_string())
            .env("L4LB_BACKEND_PORT", self.port.to_string())
            .env("L4LB_SERVICE", &self.service)
            .env("L4LB_VIP", self.vip.map(|v| v.to_string()).unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .spawn()
            .map_err(|e| CheckError::NotRun(format!("cannot run {program}: {e}")))?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(start.elapsed()),
                Ok(Some(status)) => return Err(format!("{program} {status}").into()),
                Ok(None) => {}
                Err(e) => return Err(CheckError::NotRun(format!("waiting for {program}: {e}"))),
            }
            let now = Instant::now();
            if now >= deadline {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!("{program} still running at the timeout: killed").into());
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }
}
