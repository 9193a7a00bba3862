//! End to end: the Grafana dashboard (config/grafana/l4lb.json) and the
//! Prometheus alerting rules (config/prometheus/l4lb-alerts.yml) name only
//! metrics a running l4lb exports — every `l4lb_*` name in them is a family
//! of a real scrape (a histogram's `_bucket`, `_sum` and `_count` of one),
//! taken after traffic, health checks and passive health have run.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::collections::BTreeSet;

use common::lan::{http_load, managed, service};

/// Every `l4lb_*` metric name in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("l4lb_").map(|k| k + i) {
        let starts_word = at == 0 || !(b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_');
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |k| k + at);
        if starts_word {
            out.insert(text[at..end].to_owned());
        }
        i = end;
    }
    out
}

/// The families of an exposition, with their types.
fn families(scrape: &str) -> Vec<(String, String)> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' ').map(|(n, t)| (n.to_owned(), t.to_owned())))
        .collect()
}

/// Whether `name` is a series a scrape with `fams` has.
fn exported(name: &str, fams: &[(String, String)]) -> bool {
    fams.iter().any(|(n, t)| {
        n == name
            || (t == "histogram"
                && ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(n.as_str())))
    })
}

#[test]
fn the_dashboard_and_the_alerts_name_only_metrics_l4lb_exports() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let dashboard = std::fs::read_to_string(dir.join("grafana/l4lb.json")).unwrap();
    let alerts = std::fs::read_to_string(dir.join("prometheus/l4lb-alerts.yml")).unwrap();
    // Every query of the dashboard, wherever it sits (panels, variables).
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        serde_json::Value::String(s) if k == "expr" || k == "query" || k == "definition" => {
                            out.push(s.clone())
                        }
                        _ => walk(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&json, &mut queries);
    assert!(queries.len() >= 20, "the dashboard's queries: {queries:?}");
    let wanted_by_dashboard = names_in(&queries.join("\n"));
    let wanted_by_alerts = names_in(&alerts);
    assert!(wanted_by_dashboard.len() >= 15 && wanted_by_alerts.len() >= 6);

    let backends: Vec<String> = (1..=3)
        .map(|i| format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\" }}"))
        .collect();
    let extra = "forwarding = \"l2\"\nresponse_time = \"handshake\"\npassive_health = { window_s = 5, min_flows = 5 }\n\
                 health = { check = \"http\", path = \"/health\", interval_ms = 300, timeout_ms = 250, rise = 1, fall = 2 }";
    let m = managed(&["198.18.100.1"], &service("web", "198.18.100.1", "tcp", 80, extra, &backends), None);
    http_load(&m.lan.client, "198.18.100.1", 30, "198.18.0.2", &m.l4lb);
    let scrape = m.mg.exec("curl -sf http://127.0.0.1:9100/metrics");
    let fams = families(&scrape);
    assert!(fams.len() > 40, "{scrape}");
    let missing: Vec<String> = wanted_by_dashboard
        .iter()
        .map(|n| ("dashboard", n))
        .chain(wanted_by_alerts.iter().map(|n| ("alerts", n)))
        .filter(|(_, n)| !exported(n, &fams))
        .map(|(w, n)| format!("{w}: {n}"))
        .collect();
    assert!(missing.is_empty(), "not in a scrape of l4lb: {missing:?}");
}
