//! `l4lb ctl`: the operator's client of the control socket, with tables for
//! people (`--json` for scripts) and `top`, a live view.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::control::api::{
    call, call_as, Applied, BackendRow, BgpStatus, BoxDrain, Lookup, Request, ServiceRow, Stats, Status,
    SyncStatus, WhatifRow,
};

/// Runs one request and renders its answer: a table for people, or (`json`)
/// the reply type as JSON for scripts.
pub fn run(socket: &Path, req: &Request, json: bool) -> Result<String, String> {
    if json {
        let v = call(socket, req)?;
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n");
    }
    Ok(match req {
        Request::Backends { .. } => backends_table(&call_as::<Vec<BackendRow>>(socket, req)?),
        Request::Services => services_table(&call_as::<Vec<ServiceRow>>(socket, req)?),
        Request::Stats => stats_text(&call_as(socket, req)?),
        Request::Lookup { .. } => {
            let l: Lookup = call_as(socket, req)?;
            let backend = l.backend.map_or("none".to_string(), |b| b.to_string());
            format!("service {}: backend {backend}\n  {}\n", l.service, l.why)
        }
        Request::Whatif { .. } => whatif_text(&call_as::<Vec<WhatifRow>>(socket, req)?),
        Request::Reload | Request::Drain { .. } | Request::Undrain { .. } | Request::SetWeight { .. } => {
            applied_text(&call_as(socket, req)?)
        }
        Request::Status => status_text(&call_as(socket, req)?),
        Request::Bgp => bgp_text(&call_as(socket, req)?),
        Request::DrainBox { .. } | Request::UndrainBox => box_drain_text(&call_as(socket, req)?),
        Request::Sync => sync_text(&call_as(socket, req)?),
    })
}

fn bgp_text(b: &BgpStatus) -> String {
    let mut o = format!("box: {} (VIP routes in kernel table {})\n", b.box_state, b.table);
    let _ = writeln!(o, "{:<28} {:<10} {:<20} WHY", "VIP", "ANNOUNCED", "SERVICES");
    for v in &b.vips {
        let yes = if v.announced { "yes" } else { "no" };
        let _ =
            writeln!(o, "{:<28} {:<10} {:<20} {}", v.vip.to_string(), yes, v.services.join(","), v.reason);
    }
    if let Some(d) = &b.daemon {
        let _ = writeln!(
            o,
            "\nBIRD: {} (restarts {}, socket {}){}",
            if d.running { "running" } else { "not answering" },
            d.restarts,
            d.socket,
            d.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "{:<12} {:<28} {:>10} {:<12} {:<14} {:>8} {:<6} LAST ERROR",
            "PEER", "ADDRESS", "AS", "STATE", "SINCE", "ROUTES", "BFD"
        );
        for p in &b.peers {
            let _ = writeln!(
                o,
                "{:<12} {:<28} {:>10} {:<12} {:<14} {:>8} {:<6} {}",
                p.name,
                p.address.to_string(),
                p.remote_as,
                p.state,
                p.since.as_deref().unwrap_or("-"),
                p.exported_routes.map_or("-".into(), |n| n.to_string()),
                p.bfd.as_deref().unwrap_or("-"),
                p.last_error.as_deref().unwrap_or("")
            );
        }
    }
    o
}

fn sync_text(y: &SyncStatus) -> String {
    let mut o = format!(
        "flow sync on port {}: {}\n  shared flows {} | received flows {} of {} | installed {} (evicted {}) | unknown {} | refused connections {} | bad messages {}\n",
        y.port,
        if y.warm { "warm" } else { "warming up" },
        y.shared_flows,
        y.received_flows,
        y.table_capacity,
        y.installed,
        y.evicted,
        y.unknown,
        y.refused_connections,
        y.bad_messages
    );
    let ms = |v: Option<u64>| {
        v.map_or("-".to_owned(), |v| if v == u64::MAX { "> 5000".into() } else { format!("≤ {v}") })
    };
    let _ = writeln!(
        o,
        "  lag of {} batches (ms): p50 {}, p99 {}, max {}",
        y.lag_batches,
        ms(y.lag_ms_p50),
        ms(y.lag_ms_p99),
        y.lag_ms_max
    );
    let _ = writeln!(
        o,
        "{:<28} {:<8} {:<10} {:<5} {:>10} {:>12} {:>9} {:>10} {:>8} LAST ERROR",
        "PEER", "SENDING", "RECEIVING", "DUMP", "SENT", "SENT BYTES", "DROPPED", "RECEIVED", "QUEUED"
    );
    for p in &y.peers {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(
            o,
            "{:<28} {:<8} {:<10} {:<5} {:>10} {:>12} {:>9} {:>10} {:>8} {}",
            p.address.to_string(),
            yes(p.sending),
            yes(p.receiving),
            yes(p.dump_received),
            p.sent,
            p.sent_bytes,
            p.dropped,
            p.received,
            p.queued,
            p.last_error.as_deref().unwrap_or("")
        );
    }
    o
}

fn box_drain_text(d: &BoxDrain) -> String {
    let vips: Vec<String> = d.vips.iter().map(|v| v.to_string()).collect();
    format!(
        "box: {}{}\n  VIPs: {}\n",
        d.box_state,
        if d.stopping { ", l4lb stops when the drain ends" } else { "" },
        if vips.is_empty() { "none".into() } else { vips.join(", ") }
    )
}

fn applied_text(a: &Applied) -> String {
    let mut o = format!("applied: forwarding state generation {}", a.generation);
    match a.applied_ms {
        Some(ms) => {
            let _ = write!(o, ", on every worker within {ms:.1} ms");
        }
        None => o.push_str(", not yet confirmed by every worker"),
    }
    if !a.backends.is_empty() {
        let _ = write!(o, "\n  backends: {}", a.backends.join(", "));
    }
    if let Some(r) = &a.reload {
        let _ = write!(
            o,
            "\n  reload: {} files read, {} parsed; {:.1} ms from the request to every worker",
            r.files_read, r.files_parsed, r.took_ms
        );
        for (k, names) in [
            ("services added", &r.services_added),
            ("services removed", &r.services_removed),
            ("backends added", &r.backends_added),
            ("backends removed", &r.backends_removed),
            ("weights changed", &r.weights_changed),
        ] {
            if !names.is_empty() {
                let _ = write!(o, "\n  {k}: {}", names.join(", "));
            }
        }
    }
    o + "\n"
}

fn status_text(st: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "l4lb {}  up {} s  config {}",
        st.version,
        st.uptime_s,
        st.config.as_deref().unwrap_or("-")
    );
    let gens: Vec<String> = st.worker_generations.iter().map(u64::to_string).collect();
    let _ = writeln!(
        o,
        "forwarding state generation {} (workers: {})  workers {}  TSC {:.3} GHz",
        st.generation,
        gens.join(" "),
        st.workers,
        st.tsc_hz as f64 / 1e9
    );
    for p in &st.ports {
        let link = match (p.link_up, &p.link_note) {
            (Some(true), _) => format!("link up {} Mb/s", p.speed_mbps.unwrap_or(0)),
            (Some(false), _) => "link down".into(),
            (None, Some(note)) => format!("link unknown: {note}"),
            (None, None) => "link unknown".into(),
        };
        let _ = writeln!(o, "port {} ({}): {link}", p.name, p.device);
    }
    let _ = writeln!(
        o,
        "services {}  backends {} ({} not down)  flows {}  rx packets {}",
        st.services, st.backends, st.backends_not_down, st.flows, st.rx_packets
    );
    let _ = writeln!(
        o,
        "reloads: {} applied, {} refused{}",
        st.reloads.applied,
        st.reloads.refused,
        st.reloads.last.as_ref().map_or(String::new(), |l| format!("; last {l}"))
    );
    o
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

pub fn backends_table(rows: &[BackendRow]) -> String {
    let mut o = format!(
        "{:<12} {:<26} {:<8} {:>6} {:>7} {:>8} {:>9} {:>10} {:>10} {:>9}  {}\n",
        "SERVICE", "BACKEND", "HEALTH", "WEIGHT", "EFFECT", "ENTRIES", "ACTIVE", "PPS", "BPS", "RTT", "NOTE"
    );
    for b in rows {
        let mut note = Vec::new();
        if b.draining {
            note.push("draining".to_string());
        }
        if let Some(w) = b.weight_override {
            note.push(format!("set-weight {w}"));
        }
        if let Some(e) = &b.last_error {
            note.push(e.clone());
        }
        if let Some(s) = &b.suspect {
            note.push(format!("suspect: {s}"));
        }
        if b.check_via.as_deref() == Some("vip") {
            note.push("checked via the VIP".to_string());
        }
        if let Some(us) = b.handshake_us {
            note.push(format!("handshake {:.1}ms", us as f64 / 1000.0));
        }
        let rtt = b.rtt_us.map_or("-".into(), |us| format!("{:.2}ms", us as f64 / 1000.0));
        let _ = writeln!(
            o,
            "{:<12} {:<26} {:<8} {:>6} {:>7} {:>8} {:>9} {:>10} {:>10} {:>9}  {}",
            b.service,
            b.backend.to_string(),
            b.health,
            b.weight,
            b.effective_weight,
            b.table_entries,
            b.active_flows,
            rate(b.pps, ""),
            rate(b.bps, "b"),
            rtt,
            note.join("; ")
        );
    }
    o
}

pub fn services_table(rows: &[ServiceRow]) -> String {
    let mut o = format!(
        "{:<12} {:<28} {:<6} {:<6} {:<20} {:>9} {:>12} {:>10} {:>9} {:>12} {:>12}\n",
        "SERVICE",
        "VIP",
        "PROTO",
        "MODE",
        "SCHEDULER",
        "BACKENDS",
        "PACKETS",
        "NEW",
        "ACTIVE",
        "DENIED",
        "OVER QUOTA"
    );
    for x in rows {
        let vip = std::net::SocketAddr::new(x.vip, x.port).to_string();
        // "-": no access list; else the refused new flows and the list's size.
        let denied = match x.access_prefixes {
            Some(n) => format!("{} ({n}p)", x.denied_flows),
            None => "-".into(),
        };
        // "-": no quota; else the packets over it (dropped, or sent
        // stateless with an "s").
        let over = match (&x.quota, x.over_quota_stateless) {
            (None, _) => "-".into(),
            (Some(_), 0) => x.over_quota_dropped.to_string(),
            (Some(_), n) => format!("{}+{n}s", x.over_quota_dropped),
        };
        let _ = writeln!(
            o,
            "{:<12} {:<28} {:<6} {:<6} {:<20} {:>9} {:>12} {:>10} {:>9} {:>12} {:>12}",
            x.name,
            vip,
            x.protocol,
            x.forwarding,
            x.scheduler,
            format!("{}/{}", x.backends_in_service, x.backends),
            x.packets,
            x.new_flows,
            x.active_flows,
            denied,
            over,
        );
    }
    // Each quota in words below the table.
    for x in rows {
        if let Some(q) = &x.quota {
            let _ = writeln!(o, "quota of {}: {q}", x.name);
        }
    }
    o
}

fn stats_text(st: &Stats) -> String {
    let mut o = String::new();
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

fn whatif_text(rows: &[WhatifRow]) -> String {
    let mut o = String::new();
    for r in rows {
        let _ = writeln!(
            o,
            "{}/{}: {} of {} Maglev entries move ({:.2}%), {} tracked flows move",
            r.service,
            r.backend,
            r.entries_moved,
            r.table_size,
            100.0 * r.entries_moved as f64 / r.table_size.max(1) as f64,
            r.tracked_flows_moved
        );
        for b in &r.entries_before {
            let a = r.entries_after.iter().find(|x| x.backend == b.backend).map_or(0, |x| x.entries);
            let _ = writeln!(o, "  {:<26} {:>8} -> {:>8}", b.backend.to_string(), b.entries, a);
        }
    }
    o
}

/// `l4lb ctl top`: services and backends, refreshed every `interval`;
/// `count` screens, or until interrupted.
pub fn top(socket: &Path, interval: Duration, count: Option<u64>) -> Result<(), String> {
    let mut n = 0u64;
    loop {
        let status: Status = call_as(socket, &Request::Status)?;
        let services: Vec<ServiceRow> = call_as(socket, &Request::Services)?;
        let backends: Vec<BackendRow> = call_as(socket, &Request::Backends { service: None })?;
        let stats: Stats = call_as(socket, &Request::Stats)?;
        let c = |k: &str| stats.counters.get(k).copied().unwrap_or(0);
        let mut screen = String::from("\x1b[H\x1b[2J");
        let _ = writeln!(
            screen,
            "l4lb {}  up {}s  generation {}  flows {}  rx {}  forwarded {}  dropped {}\n",
            status.version,
            status.uptime_s,
            status.generation,
            stats.flows,
            c("rx_packets"),
            c("forwarded"),
            stats.dropped,
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
