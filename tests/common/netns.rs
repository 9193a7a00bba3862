//! Network namespaces and l4lb processes for end-to-end tests, each removed
//! when its guard drops — also when the test panics.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs a command line under `sh -c`, panicking with its output if it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`sh`] but returns whether it succeeded, and the combined output.
pub fn sh_try(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh runs");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

pub fn require_root() {
    // uid 0, read from /proc (the tests stay free of unsafe).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(
        uid,
        Some("0"),
        "this end-to-end test needs root (namespaces, TAP devices): run scripts/test.sh as root"
    );
}

/// A unique short suffix for names of this test process (interface names are
/// limited to 15 bytes).
pub fn unique(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

/// A directory of this test's own in the temporary directory, removed with
/// everything in it when dropped (also when the test fails).
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates `$TMPDIR/<tag><unique>-<n>`, a new one at every call.
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{}-{n}", unique(tag)));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = sh_try(&format!("ip netns del {name} 2>/dev/null"));
        sh(&format!("ip netns add {name}"));
        sh(&format!("ip -n {name} link set lo up"));
        Netns { name: name.to_owned() }
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!("ip netns exec {} {cmd}", self.name))
    }

    pub fn exec_try(&self, cmd: &str) -> (bool, String) {
        sh_try(&format!("ip netns exec {} {cmd}", self.name))
    }

    /// Starts a long-running command inside the namespace.
    pub fn spawn(&self, cmd: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in netns")
    }

    /// Moves a root-namespace interface in and gives it an address.
    pub fn adopt(&self, ifname: &str, addrs: &[&str]) {
        sh(&format!("ip link set {ifname} netns {}", self.name));
        for a in addrs {
            sh(&format!("ip -n {} addr add {a} dev {ifname} nodad", self.name));
        }
        sh(&format!("ip -n {} link set {ifname} up", self.name));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill whatever still runs inside, then remove the namespace.
        let _ = sh_try(&format!("ip netns pids {} | xargs -r kill -9", self.name));
        let _ = sh_try(&format!("ip netns del {}", self.name));
    }
}

pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

pub fn link_exists_in_root(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

/// A running `l4lb run`, stopped with SIGTERM (then SIGKILL) on drop.
pub struct L4lb {
    child: Option<Child>,
    lines: Receiver<String>,
    pub output: Arc<Mutex<Vec<String>>>,
}

impl L4lb {
    /// Starts l4lb with the given configuration text and waits until it says
    /// it is running.
    pub fn start(config_text: &str, dir: &Path) -> L4lb {
        Self::start_in(None, config_text, dir)
    }

    /// As [`L4lb::start`], inside namespace `ns` (where its TAP devices
    /// appear and its health checks and metrics live).
    pub fn start_in(ns: Option<&Netns>, config_text: &str, dir: &Path) -> L4lb {
        Self::start_with_env(ns, config_text, dir, &[])
    }

    /// As [`L4lb::start_in`], with extra environment variables.
    pub fn start_with_env(ns: Option<&Netns>, config_text: &str, dir: &Path, env: &[(&str, &str)]) -> L4lb {
        let cfg = dir.join("l4lb.toml");
        std::fs::write(&cfg, config_text).unwrap();
        let mut cmd = match ns {
            // `ip netns exec` execs l4lb itself: signals reach it directly.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_l4lb")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_l4lb")),
        };
        let mut child = cmd
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start l4lb");
        let (tx, rx) = channel();
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        // Only the readers hold senders: the channel closes when l4lb exits.
        drop(tx);
        let mut l = L4lb { child: Some(child), lines: rx, output };
        l.wait_line(Duration::from_secs(30), |s| s.contains("l4lb running: "))
            .unwrap_or_else(|| panic!("l4lb did not start:\n{}", l.transcript()));
        l
    }

    /// Waits for an output line matching `pred`.
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    pub fn transcript(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Lines printed so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.output.lock().unwrap().iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for a clean exit; returns the whole output.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let status = self.terminate();
        // Let the reader threads catch the final lines.
        let _ = self.wait_line(Duration::from_millis(500), |_| false);
        (status.expect("l4lb exits after SIGTERM"), self.transcript())
    }

    /// SIGKILL (a crash): no drain, no withdrawal; returns the output.
    pub fn kill(mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.wait_line(Duration::from_millis(200), |_| false);
        self.transcript()
    }

    /// Sends SIGTERM without waiting: the stop (and a box's drain) begins.
    pub fn signal_stop(&self) {
        if let Some(c) = &self.child {
            let _ = sh_try(&format!("kill -TERM {}", c.id()));
        }
    }

    /// Whether l4lb has exited (its exit status then).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = sh_try(&format!("kill -TERM {}", child.id()));
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for L4lb {
    fn drop(&mut self) {
        self.terminate();
    }
}
