//! `l4lb ctl`: the operator's client of the control socket, with tables for
//! people (`--json` for scripts) and `top`, a live view.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::control::api::{call, Request, Stats};

/// Runs one request and renders its answer.
pub fn run(socket: &Path, req: &Request, json: bool) -> Result<String, String> {
    let v = call(socket, req)?;
    if json {
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n");
    }
    Ok(match req {
        Request::Backends { .. } => backends_table(&v),
        Request::Services => services_table(&v),
        Request::Stats => stats_text(&v),
        Request::Lookup { .. } => {
            format!("service {}: backend {}\n  {}\n", s(&v["service"]), s(&v["backend"]), s(&v["why"]))
        }
        Request::Whatif { .. } => whatif_text(&v),
        Request::Reload | Request::Drain { .. } | Request::Undrain { .. } | Request::SetWeight { .. } => {
            let mut o = format!("applied: forwarding state generation {}", v["generation"]);
            match v["applied_ms"].as_f64() {
                Some(ms) => {
                    let _ = write!(o, ", on every worker within {ms:.1} ms");
                }
                None => o.push_str(", not yet confirmed by every worker"),
            }
            for k in [
                "services_added",
                "services_removed",
                "backends_added",
                "backends_removed",
                "weights_changed",
            ] {
                if let Some(a) = v[k].as_array().filter(|a| !a.is_empty()) {
                    let names: Vec<String> = a.iter().map(s).collect();
                    let _ = write!(o, "\n  {}: {}", k.replace('_', " "), names.join(", "));
                }
            }
            o + "\n"
        }
        Request::Status => serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn rate(x: f64, unit: &str) -> String {
    let (v, p) = if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.1}{p}{unit}")
}

pub fn backends_table(v: &Value) -> String {
    let mut o = format!(
        "{:<12} {:<26} {:<8} {:>6} {:>7} {:>8} {:>9} {:>10} {:>10} {:>9}  {}\n",
        "SERVICE", "BACKEND", "HEALTH", "WEIGHT", "EFFECT", "ENTRIES", "ACTIVE", "PPS", "BPS", "RTT", "NOTE"
    );
    for b in v.as_array().into_iter().flatten() {
        let mut note = Vec::new();
        if b["draining"] == true {
            note.push("draining".to_string());
        }
        if !b["weight_override"].is_null() {
            note.push(format!("set-weight {}", b["weight_override"]));
        }
        if let Some(e) = b["last_error"].as_str() {
            note.push(e.to_string());
        }
        let rtt = b["rtt_us"].as_u64().map_or("-".into(), |us| format!("{:.2}ms", us as f64 / 1000.0));
        let _ = writeln!(
            o,
            "{:<12} {:<26} {:<8} {:>6} {:>7} {:>8} {:>9} {:>10} {:>10} {:>9}  {}",
            s(&b["service"]),
            s(&b["backend"]),
            s(&b["health"]),
            s(&b["weight"]),
            s(&b["effective_weight"]),
            s(&b["table_entries"]),
            s(&b["active_flows"]),
            rate(b["pps"].as_f64().unwrap_or(0.0), ""),
            rate(b["bps"].as_f64().unwrap_or(0.0), "b"),
            rtt,
            note.join("; ")
        );
    }
    o
}

pub fn services_table(v: &Value) -> String {
    let mut o = format!(
        "{:<12} {:<28} {:<6} {:<6} {:<20} {:>9} {:>12} {:>10} {:>9}\n",
        "SERVICE", "VIP", "PROTO", "MODE", "SCHEDULER", "BACKENDS", "PACKETS", "NEW", "ACTIVE"
    );
    for x in v.as_array().into_iter().flatten() {
        let vip = format!("{}:{}", s(&x["vip"]), s(&x["port"]));
        let _ = writeln!(
            o,
            "{:<12} {:<28} {:<6} {:<6} {:<20} {:>9} {:>12} {:>10} {:>9}",
            s(&x["name"]),
            vip,
            s(&x["protocol"]),
            s(&x["forwarding"]),
            s(&x["scheduler"]),
            format!("{}/{}", s(&x["backends_in_service"]), s(&x["backends"])),
            s(&x["packets"]),
            s(&x["new_flows"]),
            s(&x["active_flows"]),
        );
    }
    o
}

fn stats_text(v: &Value) -> String {
    let mut o = String::new();
    let Ok(st) = serde_json::from_value::<Stats>(v.clone()) else {
        return format!("{v:#}\n");
    };
    // Every counter of the workers' table but the drops, then the drops
    // that happened, then the gauges.
    for (k, n) in st.counters.iter().filter(|(k, _)| !st.drops.contains_key(*k)) {
        let _ = writeln!(o, "{k:<22} {n}");
    }
    let _ = writeln!(o, "{:<22} {}", "dropped", st.dropped);
    for (k, n) in st.drops.iter().filter(|(_, n)| **n != 0) {
        let _ = writeln!(o, "  drop {k:<22} {n}");
    }
    for (k, n) in [("flows", st.flows), ("flow_capacity", st.flow_capacity), ("generation", st.generation)] {
        let _ = writeln!(o, "{k:<22} {n}");
    }
    for (i, w) in st.workers.iter().enumerate() {
        let c = |k: &str| w.counters.get(k).copied().unwrap_or(0);
        let (busy, idle) = (c("busy_polls") as f64, c("idle_polls") as f64);
        let _ = writeln!(
            o,
            "worker {i}: rx {} flows {} busy polls {:.1}% generation {} longest poll gap {:.3} ms stalls {}",
            c("rx_packets"),
            w.flows,
            100.0 * busy / (busy + idle).max(1.0),
            w.generation,
            w.longest_poll_gap_us as f64 / 1000.0,
            c("stalls")
        );
    }
    o
}

fn whatif_text(v: &Value) -> String {
    let mut o = String::new();
    for r in v.as_array().into_iter().flatten() {
        let size = r["table_size"].as_f64().unwrap_or(1.0);
        let moved = r["entries_moved"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            o,
            "{}/{}: {} of {} Maglev entries move ({:.2}%), {} tracked flows move",
            s(&r["service"]),
            s(&r["backend"]),
            s(&r["entries_moved"]),
            s(&r["table_size"]),
            100.0 * moved / size,
            s(&r["tracked_flows_moved"])
        );
        let before = r["entries_before"].as_array().cloned().unwrap_or_default();
        let after = r["entries_after"].as_array().cloned().unwrap_or_default();
        for b in &before {
            let a =
                after.iter().find(|x| x["backend"] == b["backend"]).map_or("0".into(), |x| s(&x["entries"]));
            let _ = writeln!(o, "  {:<26} {:>8} -> {:>8}", s(&b["backend"]), s(&b["entries"]), a);
        }
    }
    o
}

/// `l4lb ctl top`: services and backends, refreshed every `interval`;
/// `count` screens, or until interrupted.
pub fn top(socket: &Path, interval: Duration, count: Option<u64>) -> Result<(), String> {
    let mut n = 0u64;
    loop {
        let status = call(socket, &Request::Status)?;
        let services = call(socket, &Request::Services)?;
        let backends = call(socket, &Request::Backends { service: None })?;
        let stats = call(socket, &Request::Stats)?;
        let mut screen = String::from("\x1b[H\x1b[2J");
        let _ = writeln!(
            screen,
            "l4lb {}  up {}s  generation {}  flows {}  rx {}  forwarded {}  dropped {}\n",
            s(&status["version"]),
            s(&status["uptime_s"]),
            s(&status["generation"]),
            s(&stats["flows"]),
            s(&stats["counters"]["rx_packets"]),
            s(&stats["counters"]["forwarded"]),
            s(&stats["dropped"]),
        );
        screen.push_str(&services_table(&services));
        screen.push('\n');
        screen.push_str(&backends_table(&backends));
        print!("{screen}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
