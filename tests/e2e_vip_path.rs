//! End to end: VIP-path health checks. l4lb runs in a box namespace with its
//! port's kernel interface; its checks go to each backend's VIP through the
//! backend's rewrite (L2 or IP-in-IP), as a client's packets do, so a backend
//! that is up on its own address but does not serve the VIP — the VIP missing
//! from its loopback, its tunnel endpoint stopped, a UDP server answering
//! from the wrong address — is down, and l4lb sends it no new flows, while a
//! check of the backend's own address still passes.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::lan::{
    attach_tap_from, ctl_json, http_load, l4lb_config_port, service, start_decap, start_servers,
    test_workers, topology,
};
use common::netns::{require_root, unique, L4lb, Netns};
use common::wait_for;

/// Served by every backend.
const VIP_ALL: &str = "198.18.100.1";
/// Missing from backend 2's loopback.
const VIP_L2: &str = "198.18.100.2";
const VIP_L2_V6: &str = "2001:db8:100::2";
/// Reached through IP-in-IP.
const VIP_TUNNEL: &str = "198.18.100.3";

/// Every `ctl backends` row's health, by (service, backend).
fn healths(socket: &Path) -> BTreeMap<(String, String), String> {
    let all = ctl_json(socket, "backends");
    all.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            ((s("service"), s("backend")), s("health"))
        })
        .collect()
}

/// Whether each (service, backend, health) of `want` holds.
fn expect(socket: &Path, want: &[(&str, &str, &str)]) -> bool {
    let h = healths(socket);
    want.iter()
        .all(|(svc, b, health)| h.get(&(svc.to_string(), b.to_string())).map(String::as_str) == Some(health))
}

fn counter(socket: &Path, name: &str) -> u64 {
    ctl_json(socket, "stats")["counters"][name].as_u64().unwrap_or(0)
}

#[test]
fn a_backend_that_does_not_serve_the_vip_is_down_by_its_vip_path_check_and_gets_no_flows() {
    require_root();
    let mut lan = topology(&[VIP_ALL, VIP_L2, VIP_L2_V6, VIP_TUNNEL]);
    let b2 = &lan.backends[1];
    b2.ns.exec(&format!("ip addr del {VIP_L2}/32 dev lo"));
    b2.ns.exec(&format!("ip addr del {VIP_L2_V6}/128 dev lo"));
    start_servers(&mut lan, None);
    start_decap(&mut lan);
    // start_decap's children come last, one per backend in order.
    let decap_3 = lan.children.len() - 1;

    let ns = Netns::new(&unique("l4b-vp"));
    let tap = unique("l4bv");
    let dir = std::env::temp_dir().join(unique("l4lb-vp-"));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("ctl.sock");
    let control = format!("[control]\nsocket = \"{}\"\nmetrics_address = \"\"\n", socket.display());
    let v4: Vec<String> =
        lan.backends.iter().map(|b| format!("{{ address = \"{}\", mac = \"{}\" }}", b.v4, b.mac)).collect();
    let v6: Vec<String> =
        lan.backends.iter().map(|b| format!("{{ address = \"{}\", mac = \"{}\" }}", b.v6, b.mac)).collect();
    let timing = "interval_ms = 300, timeout_ms = 250, rise = 1, fall = 2";
    let services = [
        // The backends' own addresses: every one up.
        service(
            "direct",
            VIP_ALL,
            "tcp",
            80,
            &format!("forwarding = \"l2\"\nhealth = {{ check = \"tcp\", via = \"backend\", {timing} }}"),
            &v4,
        ),
        // The default where the mode allows: through the VIP.
        service(
            "web",
            VIP_L2,
            "tcp",
            80,
            &format!("forwarding = \"l2\"\nhealth = {{ check = \"http\", path = \"/health\", {timing} }}"),
            &v4,
        ),
        service("web6", VIP_L2_V6, "tcp", 80, &format!("forwarding = \"l2\"\nhealth = {{ check = \"tcp\", {timing} }}"), &v6),
        service(
            "tunnel",
            VIP_TUNNEL,
            "tcp",
            80,
            &format!("forwarding = \"ipip\"\nhealth = {{ check = \"http\", path = \"/health\", via = \"vip\", {timing} }}"),
            &v4,
        ),
        // The backends' UDP health port answers from their own address,
        // not the VIP: a client would drop those answers, and so does the
        // VIP-path check.
        service(
            "udp",
            VIP_ALL,
            "udp",
            5301,
            &format!("forwarding = \"l2\"\nhealth = {{ check = \"udp\", send = \"ping\", expect = \"ok\", {timing} }}"),
            &v4,
        ),
    ]
    .join("\n");
    let cfg = l4lb_config_port(&tap, &control, &services, test_workers(), "kernel = { name = \"lan\" }");
    let l4lb = L4lb::start_in(Some(&ns), &cfg, &dir);
    attach_tap_from(&lan, &ns, &tap);

    let names = ["backend-1", "backend-2", "backend-3"];
    let addr = |svc: &str, i: usize| {
        let b = &lan.backends[i];
        if svc == "web6" {
            b.v6.clone()
        } else {
            b.v4.clone()
        }
    };
    let mut want: Vec<(String, String, &str)> = Vec::new();
    for svc in ["direct", "web", "web6", "tunnel", "udp"] {
        for i in 0..3 {
            let health = match (svc, i) {
                ("web" | "web6", 1) | ("udp", _) => "down",
                _ => "up",
            };
            want.push((svc.into(), addr(svc, i), health));
        }
    }
    let check = |w: &[(String, String, &str)]| {
        expect(&socket, &w.iter().map(|(s, b, h)| (s.as_str(), b.as_str(), *h)).collect::<Vec<_>>())
    };
    assert!(
        wait_for(Duration::from_secs(20), || check(&want)),
        "health through the VIPs' paths: {:?}\n{}",
        healths(&socket),
        l4lb.transcript()
    );
    let rows = ctl_json(&socket, "backends");
    let row = |svc: &str, b: &str| {
        rows.as_array().unwrap().iter().find(|r| r["service"] == svc && r["backend"] == b).unwrap().clone()
    };
    assert_eq!(row("direct", &lan.backends[1].v4)["check_via"], "backend");
    assert_eq!(row("web", &lan.backends[1].v4)["check_via"], "vip");
    let why = row("web", &lan.backends[1].v4)["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains(&format!("through the path to VIP {VIP_L2}")), "{why}");
    // The VIP backend 2 lacks: no new flows for it, and every client served.
    let counts = http_load(&lan.client, VIP_L2, 40, "198.18.0.2", &l4lb);
    assert_eq!(counts.get(names[1]), None, "{counts:?}");
    assert!(counts.contains_key(names[0]) && counts.contains_key(names[2]), "{counts:?}");
    // The tunnel's endpoint on backend 3 stops: its VIP-path check fails,
    // its own address still answers.
    let mut d = lan.children.remove(decap_3);
    let _ = d.kill();
    let _ = d.wait();
    for w in want.iter_mut() {
        if w.0 == "tunnel" && w.1 == lan.backends[2].v4 {
            w.2 = "down";
        }
    }
    assert!(
        wait_for(Duration::from_secs(10), || check(&want)),
        "after the tunnel endpoint stopped: {:?}",
        healths(&socket)
    );
    let counts = http_load(&lan.client, VIP_TUNNEL, 40, "198.18.0.2", &l4lb);
    assert_eq!(counts.get(names[2]), None, "{counts:?}");
    assert!(counts.contains_key(names[0]) && counts.contains_key(names[1]), "{counts:?}");
    // The worker loop counted both directions, and the wrong-source answers.
    for name in ["vip_path_probes", "vip_path_answers", "vip_path_wrong_source"] {
        assert!(counter(&socket, name) > 0, "{name}: {}", ctl_json(&socket, "stats")["counters"]);
    }
    let (status, out) = l4lb.stop();
    assert!(status.success(), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
