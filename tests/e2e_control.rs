//! End to end: the control API and live changes on the one-arm TAP LAN —
//! metrics against what the test sent, `ctl lookup` against where packets
//! went, `ctl whatif` against what moved, drain, reloads under wrk (ctl and
//! SIGHUP, a broken one refused), and packet accounting at the end.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::lan::{
    balancing_field, client_py, ctl, ctl_json, drop_count, http_load, managed, metric, service,
    start_long_stream, stop_long_stream, Managed,
};
use common::wait_for;
use serde_json::Value;

fn backends(n: &[u8], weights: &[u32]) -> Vec<String> {
    n.iter()
        .zip(weights)
        .map(|(i, w)| {
            format!("{{ address = \"198.18.0.1{i}\", mac = \"02:00:00:00:0b:1{i}\", weight = {w} }}")
        })
        .collect()
}

fn services(web: &[String]) -> String {
    let all = backends(&[1, 2, 3], &[1, 1, 1]);
    [
        service("web", "198.18.100.1", "tcp", 80, "forwarding = \"l2\"\nmaglev_table_size = 65537", web),
        service("udp", "198.18.100.4", "udp", 5300, "forwarding = \"l2\"", &all),
    ]
    .join("\n")
}

/// A per-worker counter summed over the workers: the rows of `family` with
/// a `worker` label and `label` (`reason="no_service"`) after it.
fn worker_sum(text: &str, family: &str, label: &str) -> f64 {
    let tail = format!(",{label}}}");
    text.lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix("{worker=\""))
        .filter_map(|l| l.split_once(&tail).map(|(_, v)| v))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

fn scrape(m: &Managed) -> String {
    m.mg.exec("curl -sf http://127.0.0.1:9100/metrics")
}

fn addr_of_name(name: &str) -> String {
    format!("198.18.0.1{}", name.trim_start_matches("backend-"))
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap()
}

/// Maglev entries per backend of `web`, from `ctl backends`.
fn entries(m: &Managed) -> HashMap<String, u64> {
    rows(&ctl_json(&m.socket, "backends web"))
        .iter()
        .map(|b| (b["backend"].as_str().unwrap().to_owned(), b["table_entries"].as_u64().unwrap()))
        .collect()
}

#[test]
fn control_api_metrics_lookup_whatif_drain_and_reloads_under_load() {
    let mut m = managed(
        &["198.18.100.1", "198.18.100.4"],
        &services(&backends(&[1, 2], &[1, 1])),
        Some("198.18.100.4"),
    );
    let sock = m.socket.clone();

    // Clear errors for wrong names.
    let (ok, out) = ctl(&sock, "drain 198.18.0.99");
    assert!(!ok && out.contains("no service has a backend 198.18.0.99"), "{out}");
    let (ok, out) = ctl(&sock, "backends nosuch");
    assert!(!ok && out.contains("no service named `nosuch`"), "{out}");
    let (ok, out) = ctl(&sock, "whatif web/198.18.0.11 weight=x");
    assert!(!ok && out.contains("say remove, drain or weight=N"), "{out}");
    let (ok, out) = ctl(&sock, "lookup tcp 198.18.0.2:1 198.18.100.9:80");
    assert!(!ok && out.contains("no service for tcp 198.18.100.9:80"), "{out}");
    let (ok, out) = ctl(&std::env::temp_dir().join("no-such.sock"), "status");
    assert!(!ok && out.contains("is l4lb running?"), "{out}");
    let (ok, out) = ctl(&sock, "backends");
    assert!(ok && out.contains("198.18.0.11") && out.contains("HEALTH"), "{out}");
    // The TAP port forwards with its kernel interface in the LAN namespace,
    // where DPDK cannot read its link: unknown, and why, not "down".
    let st = ctl_json(&sock, "status");
    let port = &st["ports"][0];
    assert!(port["link_up"].is_null(), "{st}");
    assert!(port["link_note"].as_str().unwrap().contains("in another network namespace"), "{st}");
    let (ok, out) = ctl(&sock, "status");
    assert!(ok && out.contains("link unknown: TAP interface"), "{out}");
    let (ok, out) = ctl(&sock, "top --count 2 --interval-ms 100");
    assert!(ok && out.matches("SERVICE").count() == 4 && out.contains("198.18.100.4:5300"), "{out}");

    // Metrics against what the test sends: 25 datagrams of one UDP flow, and
    // 3 to a VIP port with no service.
    let out = client_py(
        &m,
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n\
         names = set()\n\
         for i in range(25):\n    s.sendto(b'x' * 100, ('198.18.100.4', 5300)); names.add(s.recvfrom(100)[0].split()[0].decode())\n\
         for i in range(3):\n    s.sendto(b'y', ('198.18.100.4', 9999))\n\
         print(' '.join(names))\n",
    );
    let names: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(names.len(), 1, "one flow, one backend: {out}");
    let udp_backend = addr_of_name(names[0]);
    let series = format!("l4lb_backend_packets_total{{service=\"udp\",backend=\"{udp_backend}\"}}");
    let mut text = String::new();
    assert!(
        wait_for(Duration::from_secs(3), || {
            text = scrape(&m);
            worker_sum(&text, "l4lb_drops_total", "reason=\"no_service\"") == 3.0
        }),
        "{text}"
    );
    assert_eq!(metric(&text, &series), Some(25.0), "{text}");
    assert_eq!(metric(&text, "l4lb_service_packets_total{service=\"udp\",vip=\"198.18.100.4\"}"), Some(25.0));
    // 100 bytes of payload + 8 UDP + 20 IP, as l4lb counts them.
    let bytes = format!("l4lb_backend_bytes_total{{service=\"udp\",backend=\"{udp_backend}\"}}");
    assert_eq!(metric(&text, &bytes), Some(25.0 * 128.0));
    assert_eq!(
        metric(&text, "l4lb_service_new_flows_total{service=\"udp\",vip=\"198.18.100.4\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "l4lb_backend_health{service=\"web\",backend=\"198.18.0.11\",state=\"unknown\"}"),
        Some(1.0)
    );
    assert!(metric(&text, "l4lb_port_rx_packets_total{port=\"lan\"}").unwrap() >= 28.0);
    assert!(metric(&text, "l4lb_flow_table_capacity{worker=\"0\"}").unwrap() >= 65536.0);
    // Flows and the slots they take, summed over workers: every flow here is
    // IPv4, one slot each.
    let per_worker = |family: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{worker=")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let flows = per_worker("l4lb_flow_table_entries");
    assert!(flows >= 1.0 && per_worker("l4lb_flow_table_slots_used") == flows, "{text}");
    assert!(text.contains("# TYPE l4lb_backend_packets_total counter"));
    // Each worker's poll gaps: published as a gauge and a counter, and in ctl stats.
    assert!(metric(&text, "l4lb_worker_longest_poll_gap_microseconds{worker=\"0\"}").is_some(), "{text}");
    assert!(text.contains("# TYPE l4lb_worker_stalls_total counter"), "{text}");
    let w0 = &ctl_json(&m.socket, "stats")["workers"][0];
    assert!(w0["longest_poll_gap_us"].is_u64() && w0["counters"]["stalls"].is_u64(), "{w0}");
    // Every counter the events so far caused is non-zero on the metrics
    // page (summed over workers) and in `ctl stats --json`: packets in and
    // out, the UDP flow, the drops, polls, the state swap. (The neighbour
    // exchange's counters: tests/e2e_encap.rs, whose backends are resolved.)
    let text = scrape(&m);
    let stats = ctl_json(&m.socket, "stats");
    for (name, family, label) in [
        ("rx_packets", "l4lb_worker_rx_packets_total", ""),
        ("tx_packets", "l4lb_worker_tx_packets_total", ""),
        ("forwarded", "l4lb_forwarded_packets_total", ""),
        ("new_flows", "l4lb_new_flows_total", ""),
        ("flow_inserts", "l4lb_flow_table_inserts_total", ""),
        ("busy_polls", "l4lb_worker_busy_polls_total", ""),
        ("idle_polls", "l4lb_worker_idle_polls_total", ""),
        ("states_adopted", "l4lb_worker_states_adopted_total", ""),
        ("no_service", "l4lb_drops_total", "reason=\"no_service\""),
    ] {
        let on_page = if label.is_empty() {
            text.lines()
                .filter_map(|l| l.strip_prefix(family)?.strip_prefix("{worker=\""))
                .filter_map(|l| l.split_once("\"} ").map(|(_, v)| v.trim().parse::<f64>().unwrap_or(0.0)))
                .sum::<f64>()
        } else {
            worker_sum(&text, family, label)
        };
        assert!(on_page > 0.0, "{family} {label} is 0 on the metrics page:\n{text}");
        let in_stats = stats["counters"][name].as_u64().unwrap_or(0);
        assert!(in_stats > 0, "{name} is 0 in ctl stats: {stats}");
    }

    // lookup agrees with where connections actually go (new flows), and
    // then finds them tracked.
    let ports: Vec<u16> = (41000..41012).collect();
    let predicted: Vec<String> = ports
        .iter()
        .map(|p| {
            let v = ctl_json(&sock, &format!("lookup tcp 198.18.0.2:{p} 198.18.100.1:80"));
            assert!(v["why"].as_str().unwrap().starts_with("new flow: Maglev entry"), "{v}");
            v["backend"].as_str().unwrap().to_owned()
        })
        .collect();
    let out = client_py(
        &m,
        &format!(
            "import http.client\n\
             for p in {ports:?}:\n    h = http.client.HTTPConnection('198.18.100.1', 80, timeout=3, source_address=('198.18.0.2', p))\n    h.request('GET', '/'); print(h.getresponse().read().decode().split()[0]); h.close()\n"
        ),
    );
    let went: Vec<String> = out.lines().map(addr_of_name).collect();
    assert_eq!(went, predicted);
    assert!(predicted.iter().any(|b| b != &predicted[0]), "12 flows all on one backend: {predicted:?}");
    let v = ctl_json(&sock, &format!("lookup tcp 198.18.0.2:{} 198.18.100.1:80", ports[0]));
    assert!(v["why"].as_str().unwrap().starts_with("tracked flow on worker 0"), "{v}");
    assert_eq!(v["backend"], predicted[0]);

    // whatif, then the change: the predicted table is the table.
    let w = ctl_json(&sock, "whatif web/198.18.0.12 weight=3");
    let predicted: HashMap<String, u64> = rows(&w[0]["entries_after"])
        .iter()
        .map(|e| (e["backend"].as_str().unwrap().to_owned(), e["entries"].as_u64().unwrap()))
        .collect();
    let before = entries(&m);
    let moved_pred = w[0]["entries_moved"].as_u64().unwrap();
    assert!(moved_pred > 0 && moved_pred < 65537 / 2, "{w}");
    let v = ctl_json(&sock, "set-weight web/198.18.0.12 3");
    assert!(v["applied_ms"].as_f64().unwrap() < 100.0, "{v}");
    let after = entries(&m);
    assert_eq!(after, predicted);
    assert_ne!(after, before);
    let share = after["198.18.0.12"] as f64 / 65537.0;
    assert!((share - 0.75).abs() < 0.01, "weights 1:3 give it 3/4: {after:?}");
    ctl_json(&sock, "set-weight web/198.18.0.12 1");
    assert_eq!(entries(&m), before);

    // Drain: the long connection on the drained backend continues; no new
    // connection lands there.
    let stream = start_long_stream(&m.lan.client, "198.18.100.1");
    let out = m.lan.client.exec("ss -Htn state established dst 198.18.100.1");
    let local = out
        .split_whitespace()
        .find(|w| w.starts_with("198.18.0.2:"))
        .expect("the stream's socket")
        .to_owned();
    let v = ctl_json(&sock, &format!("lookup tcp {local} 198.18.100.1:80"));
    assert!(v["why"].as_str().unwrap().starts_with("tracked flow"), "{v}");
    let stream_backend = v["backend"].as_str().unwrap().to_owned();
    let w = ctl_json(&sock, &format!("whatif web/{stream_backend} remove"));
    let active = rows(&ctl_json(&sock, "backends web"))
        .iter()
        .find(|b| b["backend"] == stream_backend.as_str())
        .unwrap()["active_flows"]
        .as_u64()
        .unwrap();
    assert!(active >= 1);
    assert_eq!(w[0]["tracked_flows_moved"].as_u64(), Some(active));
    ctl_json(&sock, &format!("drain web/{stream_backend}"));
    let counts = http_load(&m.lan.client, "198.18.100.1", 60, "198.18.0.2", &m.l4lb);
    assert!(!counts.keys().any(|n| addr_of_name(n) == stream_backend), "{counts:?}");
    let drained = rows(&ctl_json(&sock, "backends web"))
        .iter()
        .find(|b| b["backend"] == stream_backend.as_str())
        .unwrap()
        .clone();
    assert_eq!(drained["draining"], true);
    assert_eq!(drained["table_entries"], 0);
    ctl_json(&sock, &format!("undrain web/{stream_backend}"));

    // Reloads while wrk runs: add backend-3 (ctl reload), change weights
    // (SIGHUP), remove the backend the long connection is not on.
    let wrk = m.lan.client.spawn("exec wrk -t1 -c4 -d5s --timeout 2s http://198.18.100.1/");
    // Each change happens under load: wait for wrk's packets before it.
    let forwarded = || ctl_json(&sock, "stats")["counters"]["forwarded"].as_u64().unwrap();
    let under_load = |n: u64| {
        let from = forwarded();
        assert!(wait_for(Duration::from_secs(5), || forwarded() >= from + n), "no traffic");
    };
    under_load(2000);
    m.write_config(&m.config(&services(&backends(&[1, 2, 3], &[1, 1, 1]))));
    let (ok, out) = ctl(&sock, "reload");
    assert!(ok, "{out}");
    assert!(out.contains("backends added: web/198.18.0.13"), "{out}");
    assert!(out.contains("on every worker within"), "{out}");
    let ms: Option<f64> = out.split("within ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok());
    assert!(ms.is_some_and(|ms| ms >= 0.0), "no time in the reload's answer: {out}");
    eprintln!("reload: {out}");
    under_load(2000);
    m.write_config(&m.config(&services(&backends(&[1, 2, 3], &[2, 2, 1]))));
    common::netns::sh(&format!("kill -HUP {}", m.l4lb.pid()));
    assert!(
        m.l4lb.wait_line(Duration::from_secs(3), |l| l.contains("reload (SIGHUP): applied")).is_some(),
        "{}",
        m.l4lb.transcript()
    );
    under_load(2000);
    let gone = ["198.18.0.11", "198.18.0.12"].into_iter().find(|a| *a != stream_backend).unwrap();
    let keep: Vec<u8> = [1u8, 2, 3].into_iter().filter(|i| format!("198.18.0.1{i}") != gone).collect();
    let on_gone = rows(&ctl_json(&sock, "backends web")).iter().find(|b| b["backend"] == gone).unwrap()
        ["active_flows"]
        .as_u64()
        .unwrap();
    m.write_config(&m.config(&services(&backends(&keep, &[1, 1]))));
    let (ok, out) = ctl(&sock, "reload");
    assert!(ok && out.contains(&format!("backends removed: web/{gone}")), "{out}");
    // A broken file is refused with its reason; the running configuration stays.
    let generation = ctl_json(&sock, "status")["generation"].as_u64().unwrap();
    m.write_config(&m.config(&services(&backends(&keep, &[1, 1]))).replace("weight = 1", "weight = -1"));
    let (ok, out) = ctl(&sock, "reload");
    assert!(!ok, "{out}");
    assert!(out.contains("l4lb.toml: services[0].backends[0].weight"), "{out}");
    let st = ctl_json(&sock, "status");
    assert_eq!(st["generation"].as_u64(), Some(generation));
    assert!(st["reloads"]["last"].as_str().unwrap().starts_with("refused"), "{st}");
    // A service from an included file: a reload adds it, the next parses only
    // the file that changed, and an error in it names that file.
    std::fs::create_dir_all(m.dir.join("services.d")).unwrap();
    let extra =
        |w: u32| service("extra", "198.18.100.9", "tcp", 8080, "forwarding = \"l2\"", &backends(&[1], &[w]));
    std::fs::write(m.dir.join("services.d/extra.toml"), extra(1)).unwrap();
    m.write_config(&format!(
        "include = [\"services.d\"]\n{}",
        m.config(&services(&backends(&keep, &[1, 1])))
    ));
    let (ok, out) = ctl(&sock, "reload");
    assert!(ok && out.contains("services added: extra") && out.contains("2 files read, 2 parsed"), "{out}");
    std::fs::write(m.dir.join("services.d/extra.toml"), extra(3)).unwrap();
    let (ok, out) = ctl(&sock, "reload");
    assert!(
        ok && out.contains("weights changed: extra/198.18.0.11") && out.contains("2 files read, 1 parsed"),
        "{out}"
    );
    std::fs::write(m.dir.join("services.d/extra.toml"), extra(1).replace("198.18.100.9", "198.18.100.300"))
        .unwrap();
    let (ok, out) = ctl(&sock, "reload");
    assert!(!ok && out.contains("extra.toml: services[0].vip"), "{out}");
    let wrk_out = wrk.wait_with_output().unwrap();
    let wrk_text = String::from_utf8_lossy(&wrk_out.stdout).into_owned();
    assert!(wrk_text.contains("requests in"), "{wrk_text}");
    // Only connections that were on the removed backend may fail: at most
    // wrk's 4, each once (it reconnects to a kept backend).
    let errors: u64 = wrk_text
        .lines()
        .find(|l| l.contains("Socket errors"))
        .map(|l| l.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    assert!(
        errors <= on_gone,
        "wrk saw {errors} errors, {on_gone} flows were on the removed backend: {wrk_text}"
    );
    assert!(!wrk_text.contains("Non-2xx"), "{wrk_text}");
    eprintln!("wrk during the reloads ({on_gone} flows on the removed backend):\n{wrk_text}");
    let counts = http_load(&m.lan.client, "198.18.100.1", 30, "198.18.0.2", &m.l4lb);
    assert!(!counts.keys().any(|n| addr_of_name(n) == gone), "{counts:?}");
    let (n, errors, seen) = stop_long_stream(stream);
    assert_eq!(errors, 0, "the long connection broke:\n{}", m.l4lb.transcript());
    assert!(n > 100);
    assert_eq!(seen.len(), 1);

    // Every packet received is accounted for: sent on, answered, or counted
    // as dropped — none lost to the state swaps.
    let Managed { l4lb, .. } = m;
    let (status, out) = l4lb.stop();
    assert!(status.success(), "{out}");
    let f = |k: &str| balancing_field(&out, k);
    assert_eq!(f("rx"), f("forwarded") + f("replied") + f("local") + f("dropped"), "{out}");
    assert_eq!(drop_count(&out, "tx_full"), 0);
    assert_eq!(drop_count(&out, "no_backend"), 0);
}

#[test]
fn lookup_names_the_backend_a_persisted_client_is_kept_on() {
    let sticky = service(
        "sticky",
        "198.18.100.1",
        "tcp",
        80,
        "forwarding = \"l2\"\npersistence_s = 60",
        &backends(&[1, 2, 3], &[1, 1, 1]),
    );
    let m = managed(&["198.18.100.1"], &sticky, None);
    let sock = m.socket.clone();
    let lookup = |port: u16| ctl_json(&sock, &format!("lookup tcp 198.18.0.2:{port} 198.18.100.1:80"));
    let connect = |port: u16| {
        let out = client_py(
            &m,
            &format!(
                "import http.client\n\
                 h = http.client.HTTPConnection('198.18.100.1', 80, timeout=3, source_address=('198.18.0.2', {port}))\n\
                 h.request('GET', '/'); print(h.getresponse().read().decode().split()[0]); h.close()\n"
            ),
        );
        addr_of_name(out.trim())
    };
    // No client kept yet: the scheduler decides, port by port.
    let v = lookup(42000);
    assert!(v["why"].as_str().unwrap().contains("l4lb keeps no backend for this client"), "{v}");
    let first = v["backend"].as_str().unwrap().to_owned();
    let other = (42001..42200)
        .find(|&p| lookup(p)["backend"] != first.as_str())
        .expect("a source port Maglev sends to another backend");
    // One connection keeps the client on `first`; a new flow from a port that
    // Maglev would send elsewhere is named as going there too, and does.
    assert_eq!(connect(42000), first);
    let v = lookup(other);
    assert_eq!(v["backend"], first.as_str(), "{v}");
    let why = v["why"].as_str().unwrap();
    assert!(why.starts_with("new flow of a persisted client: l4lb keeps 198.18.0.2"), "{v}");
    assert_eq!(connect(other), first);

    let Managed { l4lb, .. } = m;
    let (status, out) = l4lb.stop();
    assert!(status.success(), "{out}");
}
