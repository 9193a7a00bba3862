//! Prometheus text exposition (format 0.0.4) of what the management core
//! gathered: ports, services, backends, and every worker's counter table.
//!
//! Written here rather than with a client crate (`prometheus-client`,
//! `prometheus`): their model is metric objects that own their values and a
//! registry that encodes them, while l4lb's values live elsewhere — in the
//! workers' telemetry blocks, the backend registry and the ports — and are
//! read once per scrape. Rendering those values is a loop over rows and one
//! escaping rule; a registry would add a copy of every value and a
//! dependency without removing either.

use std::fmt::{Display, Write as _};

use super::api::PortCounters;
use super::registry::{BackendStatus, Health};
use crate::dataplane::pipeline::{row_info, DROPS_METRIC, ROWS};
use crate::dataplane::telemetry::WorkerStats;
/// A port's counters (with its name) and extended counters.
pub type PortRow = (PortCounters, Vec<(String, u64)>);

/// One service: name, VIP, and its backends' packets, bytes, new flows and
/// active flows summed, then the new flows its access lists refused.
pub struct ServiceRow {
    pub name: String,
    pub vip: String,
    pub sums: [u64; 5],
    /// With `[routing]`: whether the VIP is announced.
    pub announced: Option<bool>,
    /// Prefixes in its access lists, if it has any.
    pub access_prefixes: Option<u64>,
    /// With a quota: packets of new flows over it, dropped and sent
    /// stateless.
    pub over_quota: Option<[u64; 2]>,
}

/// One backend: service, address, registry status, [packets, bytes, new
/// flows, active flows], Maglev entries in the current state.
pub struct BackendRow {
    pub service: String,
    pub addr: String,
    pub status: BackendStatus,
    pub traffic: [u64; 4],
    pub maglev_entries: Option<u64>,
    /// New flows whose client sent its SYN again (passive health).
    pub syn_retried: u64,
    /// Its handshakes as the workers counted them.
    pub handshakes: crate::dataplane::pipeline::Handshakes,
}

/// Everything one scrape shows.
pub struct Scrape {
    pub generation: u64,
    pub reloads_applied: u64,
    pub reloads_refused: u64,
    pub ports: Vec<PortRow>,
    pub services: Vec<ServiceRow>,
    pub backends: Vec<BackendRow>,
    /// Each worker's counters and gauges, by worker index.
    pub workers: Vec<WorkerStats>,
    /// With `[routing]`: the box's announcements and BGP sessions.
    pub bgp: Option<crate::control::api::BgpStatus>,
    /// With `[sync]`: flow sync.
    pub sync: Option<crate::control::api::SyncStatus>,
}

/// A text exposition being written: families (HELP and TYPE) and samples.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; label values are escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", esc(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A Prometheus label value with `\`, `"` and newlines escaped.
pub fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The whole exposition of one scrape.
pub fn render(s: &Scrape) -> String {
    let mut e = Exposition::default();
    e.family("l4lb_up", "gauge", "1 while l4lb runs.");
    e.sample("l4lb_up", &[], 1);
    e.family("l4lb_forwarding_state_generation", "gauge", "Newest forwarding state built.");
    e.sample("l4lb_forwarding_state_generation", &[], s.generation);
    e.family("l4lb_reloads_total", "counter", "Configuration reloads by result.");
    e.sample("l4lb_reloads_total", &[("result", "applied")], s.reloads_applied);
    e.sample("l4lb_reloads_total", &[("result", "refused")], s.reloads_refused);
    ports(&mut e, &s.ports);
    services(&mut e, &s.services);
    backends(&mut e, &s.backends);
    workers(&mut e, &s.workers);
    if let Some(b) = &s.bgp {
        bgp(&mut e, b);
    }
    if let Some(y) = &s.sync {
        sync(&mut e, y);
    }
    e.finish()
}

fn sync(e: &mut Exposition, y: &crate::control::api::SyncStatus) {
    let gauges: [(&str, &str, u64); 3] = [
        (
            "l4lb_sync_warm",
            "1 once every peer sent what it shares (or the warm-up timed out).",
            y.warm as u64,
        ),
        ("l4lb_sync_shared_flows", "Flows this box tracks and shares with its peers.", y.shared_flows),
        (
            "l4lb_sync_received_flows",
            "Flow entries received from peers and held (lapsed ones until the table is swept, within 32 s).",
            y.received_flows,
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, "gauge", help);
        e.sample(name, &[], v);
    }
    let counters: [(&str, &str, u64); 4] = [
        ("l4lb_sync_installed_total", "Entries from peers installed.", y.installed),
        (
            "l4lb_sync_evicted_total",
            "Installed entries that took a full set's nearest-expiry slot.",
            y.evicted,
        ),
        ("l4lb_sync_unknown_total", "Entries for a service or backend this box does not have.", y.unknown),
        ("l4lb_sync_bad_messages_total", "Peer connections closed for a malformed message.", y.bad_messages),
    ];
    for (name, help, v) in counters {
        e.family(name, "counter", help);
        e.sample(name, &[], v);
    }
    let name = "l4lb_sync_lag_seconds";
    e.family(
        name,
        "histogram",
        "Batches from peers: queued there to installed here (by the two boxes' clocks).",
    );
    let mut cumulative = 0;
    for (i, n) in y.lag_buckets.iter().enumerate() {
        cumulative += n;
        let le = crate::control::sync::LAG_BUCKETS_MS
            .get(i)
            .map_or("+Inf".to_owned(), |ms| format!("{}", *ms as f64 / 1000.0));
        e.sample(&format!("{name}_bucket"), &[("le", &le)], cumulative);
    }
    e.sample(&format!("{name}_sum"), &[], y.lag_ms_sum as f64 / 1000.0);
    e.sample(&format!("{name}_count"), &[], y.lag_batches);
    type Get = fn(&crate::control::api::SyncPeerRow) -> u64;
    let per_peer: [(&str, &str, &str, Get); 6] = [
        ("l4lb_sync_peer_sending", "gauge", "1 while this box's connection to the peer is up.", |p| {
            p.sending as u64
        }),
        ("l4lb_sync_peer_receiving", "gauge", "1 while the peer's connection to this box is up.", |p| {
            p.receiving as u64
        }),
        ("l4lb_sync_sent_entries_total", "counter", "Entries sent to the peer.", |p| p.sent),
        ("l4lb_sync_sent_bytes_total", "counter", "Bytes sent to the peer (frames).", |p| p.sent_bytes),
        (
            "l4lb_sync_dropped_entries_total",
            "counter",
            "Entries for the peer dropped: its queue was full.",
            |p| p.dropped,
        ),
        ("l4lb_sync_received_entries_total", "counter", "Entries received from the peer.", |p| p.received),
    ];
    for (name, kind, help, get) in per_peer {
        e.family(name, kind, help);
        for p in &y.peers {
            e.sample(name, &[("peer", &p.address.to_string())], get(p));
        }
    }
}

fn bgp(e: &mut Exposition, b: &crate::control::api::BgpStatus) {
    e.family(
        "l4lb_box_announcing",
        "gauge",
        "1 while the box announces its VIPs; 0 while it drains out of the fleet (drain-box, a stop).",
    );
    e.sample("l4lb_box_announcing", &[], (b.box_state == "announcing") as u8);
    let Some(d) = &b.daemon else { return };
    e.family("l4lb_bgp_daemon_running", "gauge", "1 while l4lb's BIRD answers on its control socket.");
    e.sample("l4lb_bgp_daemon_running", &[], d.running as u8);
    e.family("l4lb_bgp_daemon_restarts_total", "counter", "Times l4lb started BIRD again after it exited.");
    e.sample("l4lb_bgp_daemon_restarts_total", &[], d.restarts);
    e.family("l4lb_bgp_session_up", "gauge", "1 while the BGP session to the peer is Established.");
    for p in &b.peers {
        e.sample(
            "l4lb_bgp_session_up",
            &[("peer", &p.name), ("address", &p.address.to_string())],
            p.up as u8,
        );
    }
    e.family("l4lb_bgp_session_exported_routes", "gauge", "Routes (VIPs) BIRD announces to the peer.");
    for p in &b.peers {
        let n = p.exported_routes.unwrap_or(0);
        e.sample(
            "l4lb_bgp_session_exported_routes",
            &[("peer", &p.name), ("address", &p.address.to_string())],
            n,
        );
    }
    if b.peers.iter().any(|p| p.bfd.is_some()) {
        e.family("l4lb_bgp_bfd_session_up", "gauge", "1 while the BFD session to the peer is Up.");
        for p in &b.peers {
            let up = p.bfd.as_deref() == Some("Up");
            e.sample(
                "l4lb_bgp_bfd_session_up",
                &[("peer", &p.name), ("address", &p.address.to_string())],
                up as u8,
            );
        }
    }
}

fn ports(e: &mut Exposition, rows: &[PortRow]) {
    type Get = fn(&PortCounters) -> u64;
    let families: [(&str, &str, Get); 8] = [
        ("l4lb_port_rx_packets_total", "Packets received by the port.", |s| s.rx_packets),
        ("l4lb_port_tx_packets_total", "Packets sent by the port.", |s| s.tx_packets),
        ("l4lb_port_rx_bytes_total", "Bytes received by the port.", |s| s.rx_bytes),
        ("l4lb_port_tx_bytes_total", "Bytes sent by the port.", |s| s.tx_bytes),
        ("l4lb_port_rx_missed_total", "Packets the device dropped: RX queue full.", |s| s.rx_missed),
        ("l4lb_port_rx_errors_total", "Receive errors.", |s| s.rx_errors),
        ("l4lb_port_tx_errors_total", "Transmit errors.", |s| s.tx_errors),
        ("l4lb_port_rx_nombuf_total", "Receive failures: packet pool empty.", |s| s.rx_no_mbuf),
    ];
    for (name, help, get) in families {
        e.family(name, "counter", help);
        for (s, _) in rows {
            e.sample(name, &[("port", &s.name)], get(s));
        }
    }
    type Kernel = fn(&PortCounters) -> Option<u64>;
    let kernel: [(&str, &str, Kernel); 3] = [
        ("l4lb_port_to_kernel_packets_total", "Packets sent to the port's kernel interface.", |s| {
            s.to_kernel
        }),
        ("l4lb_port_from_kernel_packets_total", "Packets from the kernel interface sent on the port.", |s| {
            s.from_kernel
        }),
        (
            "l4lb_port_kernel_dropped_packets_total",
            "Packets dropped between the port and its kernel interface (rings or device full).",
            |s| s.kernel_dropped,
        ),
    ];
    for (name, help, get) in kernel {
        if rows.iter().any(|(s, _)| get(s).is_some()) {
            e.family(name, "counter", help);
        }
        for (s, _) in rows {
            if let Some(v) = get(s) {
                e.sample(name, &[("port", &s.name)], v);
            }
        }
    }
    e.family("l4lb_port_xstat", "untyped", "The driver's extended statistics (rte_eth_xstats), by name.");
    for (s, xs) in rows {
        for (n, v) in xs {
            e.sample("l4lb_port_xstat", &[("port", &s.name), ("name", n)], v);
        }
    }
}

fn services(e: &mut Exposition, rows: &[ServiceRow]) {
    let families = [
        ("l4lb_service_packets_total", "counter", "Packets sent to the service's backends."),
        (
            "l4lb_service_bytes_total",
            "counter",
            "IP bytes sent to the service's backends (before encapsulation).",
        ),
        ("l4lb_service_new_flows_total", "counter", "Flows scheduled to the service's backends."),
        ("l4lb_service_active_flows", "gauge", "Flows the workers track for the service."),
        (
            "l4lb_service_denied_flows_total",
            "counter",
            "New flows refused by the service's access lists ([access] and its own).",
        ),
    ];
    for (i, (name, kind, help)) in families.into_iter().enumerate() {
        e.family(name, kind, help);
        for r in rows {
            e.sample(name, &[("service", &r.name), ("vip", &r.vip)], r.sums[i]);
        }
    }
    if rows.iter().any(|r| r.access_prefixes.is_some()) {
        let name = "l4lb_service_access_prefixes";
        e.family(name, "gauge", "Prefixes in the service's access lists ([access] and its own).");
        for r in rows {
            if let Some(n) = r.access_prefixes {
                e.sample(name, &[("service", &r.name), ("vip", &r.vip)], n);
            }
        }
    }
    if rows.iter().any(|r| r.over_quota.is_some()) {
        let name = "l4lb_service_over_quota_packets_total";
        e.family(
            name,
            "counter",
            "Packets of new flows over the service's quota (services.quota), by what was done with them.",
        );
        for r in rows {
            if let Some(n) = r.over_quota {
                for (action, v) in [("dropped", n[0]), ("stateless", n[1])] {
                    e.sample(name, &[("service", &r.name), ("vip", &r.vip), ("action", action)], v);
                }
            }
        }
    }
    if rows.iter().any(|r| r.announced.is_some()) {
        let name = "l4lb_service_announced";
        e.family(name, "gauge", "1 while l4lb keeps the service's VIP announced ([routing]), else 0.");
        for r in rows {
            if let Some(a) = r.announced {
                e.sample(name, &[("service", &r.name), ("vip", &r.vip)], a as u64);
            }
        }
    }
}

fn backends(e: &mut Exposition, rows: &[BackendRow]) {
    let families = [
        ("l4lb_backend_packets_total", "counter", "Packets sent to the backend."),
        ("l4lb_backend_bytes_total", "counter", "IP bytes sent to the backend (before encapsulation)."),
        ("l4lb_backend_new_flows_total", "counter", "Flows scheduled (or moved) to the backend."),
        ("l4lb_backend_active_flows", "gauge", "Flows the workers track for the backend."),
    ];
    for (i, (name, kind, help)) in families.into_iter().enumerate() {
        e.family(name, kind, help);
        for r in rows {
            e.sample(name, &[("service", &r.service), ("backend", &r.addr)], r.traffic[i]);
        }
    }
    fn id(r: &BackendRow) -> [(&'static str, &str); 2] {
        [("service", r.service.as_str()), ("backend", r.addr.as_str())]
    }
    e.family("l4lb_backend_up", "gauge", "1 when the backend is not down by its health checks.");
    for r in rows {
        e.sample("l4lb_backend_up", &id(r), (r.status.health.state != Health::Down) as u8);
    }
    e.family("l4lb_backend_health", "gauge", "Health state (unknown, up, down): 1 for the current one.");
    for r in rows {
        for h in [Health::Unknown, Health::Up, Health::Down] {
            let [s, b] = id(r);
            e.sample("l4lb_backend_health", &[s, b, ("state", h.name())], (r.status.health.state == h) as u8);
        }
    }
    e.family(
        "l4lb_backend_syn_retried_flows_total",
        "counter",
        "New flows to the backend whose client sent its SYN again: the backend did not answer the first.",
    );
    for r in rows {
        e.sample("l4lb_backend_syn_retried_flows_total", &id(r), r.syn_retried);
    }
    e.family(
        "l4lb_backend_handshake_seconds",
        "histogram",
        "TCP handshakes of the backend's new flows, from traffic: the client's SYN to its first ACK, one round trip through the backend.",
    );
    for r in rows {
        let [s, b] = id(r);
        let mut cumulative = 0;
        for (i, n) in r.handshakes.buckets.iter().enumerate() {
            cumulative += n;
            let le = crate::dataplane::pipeline::HANDSHAKE_BUCKETS_MS
                .get(i)
                .map_or("+Inf".to_string(), |ms| format!("{}", *ms as f64 / 1000.0));
            e.sample("l4lb_backend_handshake_seconds_bucket", &[s, b, ("le", &le)], cumulative);
        }
        e.sample("l4lb_backend_handshake_seconds_sum", &[s, b], r.handshakes.sum_ms as f64 / 1000.0);
        e.sample("l4lb_backend_handshake_seconds_count", &[s, b], cumulative);
    }
    e.family(
        "l4lb_backend_suspect",
        "gauge",
        "1 while passive health (services.passive_health) finds the backend failing new flows.",
    );
    for r in rows {
        e.sample("l4lb_backend_suspect", &id(r), r.status.suspect.is_some() as u8);
    }
    e.family("l4lb_backend_draining", "gauge", "1 while the backend is drained.");
    for r in rows {
        e.sample("l4lb_backend_draining", &id(r), r.status.draining_since_ms.is_some() as u8);
    }
    e.family("l4lb_backend_maglev_entries", "gauge", "Maglev table entries the backend holds.");
    for r in rows {
        e.sample("l4lb_backend_maglev_entries", &id(r), r.maglev_entries.unwrap_or(0));
    }
    e.family(
        "l4lb_backend_check_rtt_seconds",
        "gauge",
        "Round-trip time of the last successful health check.",
    );
    for r in rows.iter().filter(|r| r.status.checks_ok > 0) {
        e.sample("l4lb_backend_check_rtt_seconds", &id(r), r.status.rtt_us as f64 / 1e6);
    }
    e.family("l4lb_backend_checks_total", "counter", "Health checks by result.");
    for r in rows {
        let [s, b] = id(r);
        e.sample("l4lb_backend_checks_total", &[s, b, ("result", "ok")], r.status.checks_ok);
        e.sample("l4lb_backend_checks_total", &[s, b, ("result", "failed")], r.status.checks_failed);
        e.sample("l4lb_backend_checks_total", &[s, b, ("result", "not_run")], r.status.checks_not_run);
    }
}

/// Every row of the workers' counter table, per worker (the table's rows of
/// one family are adjacent: one header each), then the workers' gauges.
pub fn workers(e: &mut Exposition, per: &[WorkerStats]) {
    let mut last_family = "";
    for i in 0..ROWS {
        let info = row_info(i);
        if info.metric != last_family {
            let help = if info.metric == DROPS_METRIC { "Packets dropped, by reason." } else { info.help };
            e.family(info.metric, "counter", help);
            last_family = info.metric;
        }
        for (w, s) in per.iter().enumerate() {
            let w = w.to_string();
            let v = s.counters.as_array()[i];
            match info.label {
                Some(l) => e.sample(info.metric, &[("worker", &w), l], v),
                None => e.sample(info.metric, &[("worker", &w)], v),
            }
        }
    }
    type Get = fn(&WorkerStats) -> u64;
    let gauges: [(&str, &str, Get); 5] = [
        ("l4lb_worker_state_generation", "Forwarding-state generation the worker uses.", |s| s.generation),
        (
            "l4lb_worker_longest_poll_gap_microseconds",
            "The longest time between two polls since start (the worker was not running).",
            |s| s.longest_poll_gap_us,
        ),
        (
            "l4lb_flow_table_entries",
            "Flows in the flow table, expired ones not yet reclaimed included (an IPv6 flow takes two slots).",
            |s| s.flows,
        ),
        (
            "l4lb_flow_table_slots_used",
            "Flow-table slots taken: one per IPv4 flow, two per IPv6 flow.",
            |s| s.flow_slots_used,
        ),
        ("l4lb_flow_table_capacity", "Flow-table slots: IPv4 flows it holds when full.", |s| s.flow_capacity),
    ];
    for (name, help, get) in gauges {
        e.family(name, "gauge", help);
        for (w, s) in per.iter().enumerate() {
            e.sample(name, &[("worker", &w.to_string())], get(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::pipeline::Counters;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(esc("x\ny"), "x\\ny");
    }

    /// Every row of the counter table reaches the page, per worker, with its
    /// own value (a row published as 0 or under another row's series fails),
    /// each family with one HELP and TYPE.
    #[test]
    fn every_counter_reaches_the_page_with_its_value() {
        let per: Vec<WorkerStats> = (0..2u64)
            .map(|w| WorkerStats {
                counters: Counters::from_array(std::array::from_fn(|i| 1 + i as u64 + 1000 * w)),
                ..Default::default()
            })
            .collect();
        let mut e = Exposition::default();
        workers(&mut e, &per);
        let text = e.finish();
        for i in 0..ROWS {
            let info = row_info(i);
            for w in 0..2u64 {
                let labels = match info.label {
                    Some((k, v)) => format!("{{worker=\"{w}\",{k}=\"{v}\"}}"),
                    None => format!("{{worker=\"{w}\"}}"),
                };
                let line = format!("{}{labels} {}", info.metric, 1 + i as u64 + 1000 * w);
                assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
            }
            let header = format!("# TYPE {} counter", info.metric);
            assert_eq!(text.lines().filter(|l| *l == header).count(), 1, "{header}");
        }
    }
}
