//! The management side's work for a big configuration (docs/benchmarks.md,
//! "A big configuration"): SERVICES services of BACKENDS backends each
//! (default 1000 × 100, Maglev tables of 65537), timed in one run —
//!
//! - `check`: reading and validating the file (what `l4lb check` does);
//! - `start`: the registry and the first forwarding state (every table built);
//! - `reload`, one backend's weight changed: the new file read and checked,
//!   the trial state and the published one built (what `l4lb ctl reload`
//!   does before the workers take the state), with the tables of unchanged
//!   services taken from the state in force, and the same without them
//!   (every table rebuilt, as before states shared them);
//! - the forwarding state's memory: Maglev tables, backends, templates.
//!
//!     cargo run --release --example big_config [SERVICES BACKENDS]
use std::time::Instant;

use l4lb::control::config::Config;
use l4lb::control::registry::Registry;
use l4lb::control::state_build::simulated_facts;

fn config(services: usize, backends: usize, changed_weight: u32) -> String {
    let mut t = String::from(
        "[dpdk]\nlcores = \"0@0,1@1\"\ndevices = [\"net_null0\"]\nhugepages = false\n\n\
         [[ports]]\nname = \"lan\"\ndevice = \"net_null0\"\nipv4 = \"198.18.0.1/15\"\nkernel = { enabled = false }\n\n",
    );
    for s in 0..services {
        t += &format!(
            "[[services]]\nname = \"s{s}\"\nvip = \"198.19.{}.{}\"\nprotocol = \"tcp\"\nport = 80\nforwarding = \"l2\"\nbackends = [\n",
            200 + s / 250,
            s % 250 + 1
        );
        for b in 0..backends {
            let n = s * backends + b;
            let w = if s == 0 && b == 0 { changed_weight } else { 1 };
            // 198.18.0.2 upwards (198.18.0.0/15 holds 131070), below the VIPs.
            let a = std::net::Ipv4Addr::from(0xc612_0002 + n as u32);
            t += &format!(
                "  {{ address = \"{a}\", mac = \"02:00:00:{:02x}:{:02x}:{:02x}\", weight = {w} }},\n",
                n >> 16 & 0xff,
                n >> 8 & 0xff,
                n & 0xff
            );
        }
        t += "]\n\n";
    }
    t
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, backends) = (args.first().copied().unwrap_or(1000), args.get(1).copied().unwrap_or(100));
    let dir = std::env::temp_dir().join(format!("l4lb-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("l4lb.toml");
    std::fs::write(&path, config(services, backends, 1)).unwrap();
    println!(
        "{services} services x {backends} backends ({} backends), a {:.1} MB file",
        services * backends,
        std::fs::metadata(&path).unwrap().len() as f64 / 1e6
    );

    let t = Instant::now();
    let cfg = Config::load(&path).unwrap();
    println!("check (read and validate)               {:>9.1} ms", t.elapsed().as_secs_f64() * 1e3);

    let facts = simulated_facts(&cfg);
    let t = Instant::now();
    let registry = Registry::new(cfg);
    let state = registry.build(1, &facts, &|_, _| None, 0, None).unwrap();
    println!("start (registry, first state)           {:>9.1} ms", t.elapsed().as_secs_f64() * 1e3);

    let tables: usize = state.services.iter().map(|s| s.maglev.entries().len() * 3).sum();
    println!(
        "forwarding state: {} services, {} backends, Maglev tables {:.1} MiB (2 + 1 bytes per entry)",
        state.services.len(),
        state.backends.len(),
        tables as f64 / (1 << 20) as f64
    );

    // One backend's weight changes in the file.
    std::fs::write(&path, config(services, backends, 3)).unwrap();
    for (what, previous) in [("sharing unchanged tables", Some(&state)), ("rebuilding every table", None)] {
        let t = Instant::now();
        let new = Config::load(&path).unwrap();
        let read = t.elapsed();
        let mut trial = registry.clone();
        let cloned = t.elapsed();
        trial.reload(new).unwrap();
        let reloaded = t.elapsed();
        let checked = trial.build(2, &facts, &|_, _| None, 0, previous).unwrap();
        let built = t.elapsed();
        let published = trial.build(2, &facts, &|_, _| None, 0, previous).unwrap();
        let total = t.elapsed();
        let ms = |a: std::time::Duration, b: std::time::Duration| (b - a).as_secs_f64() * 1e3;
        let rebuilt = published
            .services
            .iter()
            .zip(&state.services)
            .filter(|(a, b)| !std::sync::Arc::ptr_eq(&a.maglev, &b.maglev))
            .count();
        assert_eq!(checked.services.len(), services);
        println!(
            "reload, one weight, {what:<24} {:>9.1} ms: file {:.1}, registry copy {:.1}, reload {:.1}, \
             trial state {:.1}, state {:.1} ms; {rebuilt} tables built",
            total.as_secs_f64() * 1e3,
            read.as_secs_f64() * 1e3,
            ms(read, cloned),
            ms(cloned, reloaded),
            ms(reloaded, built),
            ms(built, total),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
