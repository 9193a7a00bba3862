//! The management side's work for a big configuration (docs/benchmarks.md,
//! "A big configuration"): SERVICES services of BACKENDS backends each
//! (default 1000 × 100, Maglev tables of 65537), kept two ways — one file,
//! and a main file that includes a directory of one file per service — and
//! timed in one run:
//!
//! - `check`: reading and validating (what `l4lb check` does);
//! - `start`: reading, the registry and the first forwarding state (every
//!   table built);
//! - `reload`, one backend's weight changed, three times: what `l4lb ctl
//!   reload` does before the workers take the state — the files read (only
//!   changed ones parsed) and checked, the registry copied and given the new
//!   configuration, the new state built with the tables of unchanged
//!   services taken from the state in force; and once more with every table
//!   rebuilt, as before states shared them;
//! - the forwarding state's memory: Maglev tables.
//!
//!     cargo run --release --example big_config [SERVICES BACKENDS]
//!
//! `big_config write DIR one|split WEIGHT [SERVICES BACKENDS]` writes the
//! configuration alone (service 0's first backend of weight WEIGHT), with a
//! control socket in DIR, for `scripts/bench/big-config.sh` to time on a
//! running l4lb.
use std::path::Path;
use std::time::{Duration, Instant};

use l4lb::balancer::state::ForwardingState;
use l4lb::control::config::{Config, ConfigCache};
use l4lb::control::registry::Registry;
use l4lb::control::state_build::simulated_facts;

/// The sections before the services: a net_null port, the control socket
/// (and the EAL files' prefix) in `dir`, no metrics listener.
fn header(dir: &Path) -> String {
    format!(
        "[dpdk]\nlcores = \"0@0,1@1\"\ndevices = [\"net_null0\"]\nhugepages = false\nfile_prefix = \"l4lbbig\"\n\n\
         [control]\nsocket = \"{}\"\nmetrics_address = \"\"\n\n\
         [[ports]]\nname = \"lan\"\ndevice = \"net_null0\"\nipv4 = \"198.18.0.1/15\"\nkernel = {{ enabled = false }}\n\n",
        dir.join("ctl.sock").display()
    )
}

/// Service `s`; its first backend's weight is `first_weight`.
fn service(s: usize, backends: usize, first_weight: u32) -> String {
    let mut t = format!(
        "[[services]]\nname = \"s{s}\"\nvip = \"198.19.{}.{}\"\nprotocol = \"tcp\"\nport = 80\nforwarding = \"l2\"\nbackends = [\n",
        200 + s / 250,
        s % 250 + 1
    );
    for b in 0..backends {
        let n = s * backends + b;
        let w = if b == 0 { first_weight } else { 1 };
        // 198.18.0.2 upwards (198.18.0.0/15 holds 131070), below the VIPs.
        let a = std::net::Ipv4Addr::from(0xc612_0002 + n as u32);
        t += &format!(
            "  {{ address = \"{a}\", mac = \"02:00:00:{:02x}:{:02x}:{:02x}\", weight = {w} }},\n",
            n >> 16 & 0xff,
            n >> 8 & 0xff,
            n & 0xff
        );
    }
    t + "]\n\n"
}

/// The configuration in `dir`, service 0's first weight `w`; the main file.
fn write(dir: &Path, split: bool, services: usize, backends: usize, w: u32) -> std::path::PathBuf {
    let main = dir.join("l4lb.toml");
    if split {
        let d = dir.join("services.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(&main, format!("include = [\"services.d\"]\n{}", header(dir))).unwrap();
        for s in 0..services {
            // Only the changed file is written again.
            let f = d.join(format!("s{s:04}.toml"));
            if s == 0 || !f.exists() {
                std::fs::write(f, service(s, backends, if s == 0 { w } else { 1 })).unwrap();
            }
        }
    } else {
        let mut t = header(dir);
        for s in 0..services {
            t += &service(s, backends, if s == 0 { w } else { 1 });
        }
        std::fs::write(&main, t).unwrap();
    }
    main
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { size(&p) } else { p.metadata().unwrap().len() })
        .sum()
}

/// One reload as the management core does it; prints its parts.
fn reload(path: &Path, cache: &mut ConfigCache, registry: &Registry, state: &ForwardingState, share: bool) {
    let facts = simulated_facts(&registry.cfg);
    let t = Instant::now();
    let new = Config::load_cached(path, cache).unwrap();
    let read = t.elapsed();
    let (trial, _) = registry.reloaded(new).unwrap();
    let reloaded = t.elapsed();
    let next = trial.build(2, &facts, &|_, _| None, 0, share.then_some(state)).unwrap();
    let total = t.elapsed();
    let rebuilt = next
        .services
        .iter()
        .zip(&state.services)
        .filter(|(a, b)| !std::sync::Arc::ptr_eq(&a.maglev, &b.maglev));
    println!(
        "  reload, one weight{:<22} {:>8.1} ms: files {:.1}, registry {:.1}, state {:.1} ms; {} tables built",
        if share { "" } else { ", every table rebuilt" },
        ms(total),
        ms(read),
        ms(reloaded - read),
        ms(total - reloaded),
        rebuilt.count()
    );
}

fn main() {
    let words: Vec<String> = std::env::args().skip(1).collect();
    if words.first().is_some_and(|w| w == "write") {
        let usage = "big_config write DIR one|split WEIGHT [SERVICES BACKENDS]";
        let (Some(dir), Some(layout), Some(Ok(w))) =
            (words.get(1), words.get(2), words.get(3).map(|w| w.parse()))
        else {
            panic!("{usage}")
        };
        let n: Vec<usize> = words[4..].iter().filter_map(|a| a.parse().ok()).collect();
        let dir = Path::new(dir);
        std::fs::create_dir_all(dir).unwrap();
        let path = write(
            dir,
            layout == "split",
            n.first().copied().unwrap_or(1000),
            n.get(1).copied().unwrap_or(100),
            w,
        );
        println!("{}", path.display());
        return;
    }
    let args: Vec<usize> = words.iter().filter_map(|a| a.parse().ok()).collect();
    let (services, backends) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(100));
    for split in [false, true] {
        let dir = std::env::temp_dir().join(format!("l4lb-big-{}-{split}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = write(&dir, split, services, backends, 1);
        println!(
            "{services} services x {backends} backends ({} backends), {:.1} MB in {}",
            services * backends,
            size(&dir) as f64 / 1e6,
            if split { "a main file and one included file per service" } else { "one file" }
        );

        let t = Instant::now();
        Config::load(&path).unwrap();
        println!("  check (read and validate)          {:>9.1} ms", ms(t.elapsed()));

        let t = Instant::now();
        let mut cache = ConfigCache::default();
        let cfg = Config::load_cached(&path, &mut cache).unwrap();
        let facts = simulated_facts(&cfg);
        let registry = Registry::new(cfg);
        let state = registry.build(1, &facts, &|_, _| None, 0, None).unwrap();
        println!("  start (read, registry, first state) {:>8.1} ms", ms(t.elapsed()));
        if !split {
            let tables: usize = state.services.iter().map(|s| s.maglev.entries().len() * 3).sum();
            println!(
                "  forwarding state: {} services, {} backends, Maglev tables {:.1} MiB (2 + 1 bytes per entry)",
                state.services.len(),
                state.backends.len(),
                tables as f64 / (1 << 20) as f64
            );
        }
        for w in [3, 1, 3] {
            write(&dir, split, services, backends, w);
            reload(&path, &mut cache, &registry, &state, true);
        }
        if !split {
            write(&dir, split, services, backends, 1);
            reload(&path, &mut cache, &registry, &state, false);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
