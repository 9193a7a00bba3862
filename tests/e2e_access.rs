//! End to end: access lists on the one-arm TAP LAN. Clients from several
//! source addresses (IPv4 and IPv6) connect to services whose lists and the
//! global `[access]` refuse some of them; the refused SYNs are counted per
//! service and as a drop reason; a reload that changes the lists refuses
//! and admits the new sets while an allowed client's new UDP flows, one per
//! datagram, lose nothing.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::io::BufRead;
use std::time::Duration;

use common::lan::{client_py, ctl, ctl_json, managed, metric, service, spawn_script, Managed};
use common::wait_for;

const WEB: &str = "198.18.100.1";
const WEB6: &str = "2001:db8:100::1";
const UDP: &str = "198.18.100.4";

fn backends(v6: bool) -> Vec<String> {
    (1..=3)
        .map(|i| {
            let a = if v6 { format!("2001:db8::1{i}") } else { format!("198.18.0.1{i}") };
            format!("{{ address = \"{a}\", mac = \"02:00:00:00:0b:1{i}\" }}")
        })
        .collect()
}

/// `web` and `web6` share one list (`web`), `udp` has `udp`; `global` is
/// the `[access]` table.
fn services(web: &str, udp: &str, global: &str) -> String {
    let l2 = |access: &str| format!("forwarding = \"l2\"\naccess = {{ {access} }}");
    [
        service("web", WEB, "tcp", 80, &l2(web), &backends(false)),
        service("web6", WEB6, "tcp", 80, &l2(web), &backends(true)),
        service("udp", UDP, "udp", 5300, &l2(udp), &backends(false)),
        format!("[access]\n{global}\n"),
    ]
    .join("\n")
}

/// Three HTTP requests from each source to `vip`, each with 0.5 s to
/// connect (one SYN: the first retransmission is due after 1 s); the
/// answers that came, per source.
fn attempts(m: &Managed, vip: &str, sources: &[&str]) -> Vec<usize> {
    let script = format!(
        "import http.client\n\
         for src in {sources:?}:\n    ok = 0\n    for i in range(3):\n        \
         try:\n            h = http.client.HTTPConnection('{vip}', 80, timeout=0.5, source_address=(src, 0))\n            \
         h.request('GET', '/'); body = h.getresponse().read().decode(); h.close()\n            \
         assert body.split()[1] == src, body\n            ok += 1\n        \
         except OSError:\n            pass\n    print(ok)\n"
    );
    client_py(m, &script).lines().map(|l| l.trim().parse().unwrap()).collect()
}

fn denied(m: &Managed, service: &str) -> u64 {
    let rows = ctl_json(&m.socket, "services");
    let row = rows.as_array().unwrap().iter().find(|r| r["name"] == service).unwrap().clone();
    row["denied_flows"].as_u64().unwrap()
}

#[test]
fn access_lists_refuse_clients_per_service_and_globally_and_a_reload_changes_them_losing_nothing() {
    let vips = [WEB, WEB6, UDP];
    let m = managed(
        &vips,
        &services(
            "deny = [\"198.18.0.3\", \"2001:db8::3/128\"]",
            "allow = [\"198.18.0.0/29\"]",
            "deny = [\"198.18.0.4/32\", \"2001:db8::4\"]",
        ),
        Some(UDP),
    );
    // More client addresses: .3 and ::3 the services refuse, .4 and ::4
    // the global list.
    for a in ["198.18.0.3/24", "198.18.0.4/24", "2001:db8::3/64 nodad", "2001:db8::4/64 nodad"] {
        m.lan.client.exec(&format!("ip addr add {a} dev vci"));
    }
    let v4 = ["198.18.0.2", "198.18.0.3", "198.18.0.4"];
    let v6 = ["2001:db8::2", "2001:db8::3", "2001:db8::4"];
    assert_eq!(attempts(&m, WEB, &v4), [3, 0, 0], "IPv4: .2 allowed, .3 and .4 refused");
    assert_eq!(attempts(&m, WEB6, &v6), [3, 0, 0], "IPv6: ::2 allowed, ::3 and ::4 refused");
    // One SYN per refused attempt, counted for its service.
    assert_eq!((denied(&m, "web"), denied(&m, "web6"), denied(&m, "udp")), (6, 6, 0));
    let text = m.mg.exec("curl -sf http://127.0.0.1:9100/metrics");
    let drops: f64 = text
        .lines()
        .filter(|l| l.starts_with("l4lb_drops_total{") && l.contains("reason=\"access_denied\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert_eq!(drops, 12.0, "{text}");
    assert_eq!(
        metric(&text, "l4lb_service_denied_flows_total{service=\"web\",vip=\"198.18.100.1\"}"),
        Some(6.0)
    );
    assert_eq!(
        metric(&text, "l4lb_service_access_prefixes{service=\"web\",vip=\"198.18.100.1\"}"),
        Some(4.0)
    );
    assert_eq!(
        metric(&text, "l4lb_service_access_prefixes{service=\"udp\",vip=\"198.18.100.4\"}"),
        Some(3.0)
    );
    let (ok, table) = ctl(&m.socket, "services");
    assert!(ok && table.contains("DENIED") && table.contains("6 (4p)"), "{table}");
    // `ctl lookup` says why a client cannot connect.
    let (ok, out) = ctl(&m.socket, "lookup tcp 198.18.0.4:5555 198.18.100.1:80");
    assert!(ok && out.contains("refused") && out.contains("access_denied"), "{out}");
    let (ok, out) = ctl(&m.socket, "lookup tcp 198.18.0.2:5555 198.18.100.1:80");
    assert!(ok && !out.contains("refused"), "{out}");

    // An allowed client sends datagrams, each from a new port (a new flow,
    // checked against the list in force), while the lists change.
    let udp = spawn_script(
        &m.lan.client,
        &format!(
            "import socket, sys, time\n\
             print('ready', flush=True)\n\
             sent = got = 0\n\
             t = time.time()\n\
             while time.time() - t < 4:\n    \
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('198.18.0.2', 0)); s.settimeout(1)\n    \
             s.sendto(b'x', ('{UDP}', 5300)); sent += 1\n    \
             try:\n        s.recvfrom(100); got += 1\n    except OSError:\n        pass\n    \
             s.close(); time.sleep(0.002)\n\
             print(sent, got, flush=True)\n"
        ),
        "l4b-acl-udp-",
    );
    let forwarded = || ctl_json(&m.socket, "stats")["counters"]["forwarded"].as_u64().unwrap();
    let from = forwarded();
    assert!(wait_for(Duration::from_secs(5), || forwarded() >= from + 200), "no UDP traffic");
    // Now: .3 may reach the web services and ::4 too, .4 may not (outside
    // the new allow list); the global list is gone.
    m.write_config(&m.config(&services(
        "allow = [\"198.18.0.2\", \"198.18.0.3\", \"2001:db8::/64\"], deny = [\"2001:db8::3\"]",
        "allow = [\"198.18.0.2\"]",
        "",
    )));
    let (ok, out) = ctl(&m.socket, "reload");
    assert!(ok, "{out}");
    let mut udp = udp;
    let mut line = String::new();
    std::io::BufReader::new(udp.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = udp.wait();
    let w: Vec<u64> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
    eprintln!("UDP across the reload: {} sent, {} answered", w[0], w[1]);
    assert!(w[0] > 300, "{line}");
    assert_eq!(w[0], w[1], "an allowed client lost datagrams across the reload");
    assert_eq!(denied(&m, "udp"), 0);
    assert_eq!(attempts(&m, WEB, &v4), [3, 3, 0], "after the reload");
    assert_eq!(attempts(&m, WEB6, &v6), [3, 0, 3], "after the reload");
    // The counts carry on across the reload.
    assert_eq!((denied(&m, "web"), denied(&m, "web6")), (9, 9));
}
