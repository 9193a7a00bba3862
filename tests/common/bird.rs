//! BIRD 2 in a test namespace: started in the foreground with a
//! configuration of the test's, asked over its control socket, killed on drop.
#![allow(dead_code)]

use super::netns::Netns;

/// BIRD in `ns` with `conf`, in the foreground (its PID is the child's),
/// its control socket in `dir`.
pub struct Bird {
    pub child: std::process::Child,
    pub socket: std::path::PathBuf,
}

impl Bird {
    pub fn start(ns: &Netns, dir: &std::path::Path, tag: &str, conf: &str) -> Bird {
        let (c, socket) = (dir.join(format!("{tag}.conf")), dir.join(format!("{tag}.ctl")));
        std::fs::write(&c, conf).unwrap();
        let child = ns.spawn(&format!("exec bird -f -c {} -s {}", c.display(), socket.display()));
        Bird { child, socket }
    }

    /// `birdc show protocols` line of protocol `name`.
    pub fn protocol(&self, ns: &Netns, name: &str) -> String {
        let (_, out) = ns.exec_try(&format!("birdc -s {} show protocols {name}", self.socket.display()));
        out.lines().find(|l| l.starts_with(name)).unwrap_or("").to_owned()
    }

    /// The routes learnt over the BGP session.
    pub fn learnt(&self, ns: &Netns) -> String {
        ns.exec_try(&format!("birdc -s {} show route protocol peer", self.socket.display())).1
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bird {
    /// `birdc ARGS` against this BIRD: its output.
    pub fn ask(&self, ns: &Netns, args: &str) -> String {
        ns.exec_try(&format!("birdc -s {} {args}", self.socket.display())).1
    }
}
