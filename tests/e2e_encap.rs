//! End to end: HTTP through VIPs in IP-in-IP (4in4, 6in6, 4in6) and GUE
//! (over IPv4 and IPv6) modes, and an IPv6 VIP in L2 mode. The test kernel has no ipip/ip6tnl/fou, so each
//! backend decapsulates in userspace (scripts/backend-decap.py: raw and UDP
//! sockets into a TUN device) and its kernel TCP stack answers the client
//! directly from the VIP.
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
mod common;

use common::lan::{
    attach_tap, balancing_field, ctl_json, http_load, l4lb_config, service, start_decap, start_servers,
    topology,
};
use common::netns::{netns_exists, require_root, unique, L4lb};

const VIPS: [&str; 6] = [
    "198.18.100.11",
    "198.18.100.12",
    "198.18.100.13",
    "2001:db8:100::11",
    "2001:db8:100::12",
    "2001:db8:100::13",
];

fn config(tap: &str, t: &common::lan::Lan) -> String {
    let v4: Vec<String> =
        t.backends.iter().map(|b| format!("{{ address = \"{}\", mac = \"{}\" }}", b.v4, b.mac)).collect();
    let v6: Vec<String> =
        t.backends.iter().map(|b| format!("{{ address = \"{}\", mac = \"{}\" }}", b.v6, b.mac)).collect();
    // No MACs here: l4lb resolves these backends by neighbour discovery.
    let v6_resolved: Vec<String> =
        t.backends.iter().map(|b| format!("{{ address = \"{}\" }}", b.v6)).collect();
    let svc = |name: &str, vip: &str, fwd: &str, bs: &[String]| {
        service(name, vip, "tcp", 80, &format!("forwarding = \"{fwd}\""), bs)
    };
    let services = [
        svc("ipip-4in4", VIPS[0], "ipip", &v4),
        svc("gue-v4", VIPS[1], "gue", &v4),
        svc("ipip-4in6", VIPS[2], "ipip", &v6),
        svc("ipip-6in6", VIPS[3], "ipip", &v6_resolved),
        svc("gue-v6", VIPS[4], "gue", &v6),
        svc("l2-v6", VIPS[5], "l2", &v6_resolved),
    ];
    l4lb_config(tap, &services.join("\n"))
}

#[test]
fn http_through_ipip_and_gue_tunnels_over_ipv4_and_ipv6() {
    require_root();
    let mut t = topology(&VIPS);
    start_servers(&mut t, None);
    start_decap(&mut t);
    let tap = unique("l4bt");
    let dir = std::env::temp_dir().join(unique("l4lb-encap-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(&tap, &t);
    let socket =
        cfg.lines().find_map(|l| l.strip_prefix("socket = ")).expect("a control socket").trim_matches('"');
    let socket = std::path::PathBuf::from(socket);
    let l4lb = L4lb::start(&cfg, &dir);
    attach_tap(&t, &tap);
    let names: Vec<String> = t.backends.iter().map(|b| b.name.clone()).collect();

    // l4lb answers neighbour solicitations and ping on IPv6 too.
    let out = t.client.exec("ping -6 -c 2 -i 0.2 -W 2 2001:db8::1");
    assert!(out.contains("2 received"), "{out}");

    let mut total = 0;
    for (vip, client) in [
        (VIPS[0], "198.18.0.2"),
        (VIPS[1], "198.18.0.2"),
        (VIPS[2], "198.18.0.2"),
        (VIPS[3], "2001:db8::2"),
        (VIPS[4], "2001:db8::2"),
        (VIPS[5], "2001:db8::2"),
    ] {
        let n = 150;
        let counts = http_load(&t.client, vip, n, client, &l4lb);
        total += n as u64;
        for name in &names {
            let c = counts.get(name).copied().unwrap_or(0);
            assert!(c >= 20, "{vip}: backend {name} got {c} of {n}: {counts:?}");
        }
    }
    // The neighbour exchange that resolved the IPv6 backends reached the
    // workers' counters: solicitations the management core had a worker
    // send, advertisements a worker handed up.
    let stats = ctl_json(&socket, "stats");
    for name in ["control_sent", "control_up"] {
        assert!(stats["counters"][name].as_u64().unwrap_or(0) > 0, "{name} is 0: {stats}");
    }
    let (status, transcript) = l4lb.stop();
    assert!(status.success(), "{transcript}");
    // A client may reuse a source port whose flow is still closing: that is
    // the same flow again, so allow a few fewer new flows than connections.
    assert!(balancing_field(&transcript, "new_flows") >= total * 9 / 10, "{transcript}");
    assert!(balancing_field(&transcript, "replied") <= 20, "replies bypass l4lb: {transcript}");
    assert!(transcript.contains("neighbours: 3 of 3 resolved"), "neighbour discovery:\n{transcript}");
    let names_ns: Vec<String> =
        std::iter::once(t.lan.name.clone()).chain(t.backends.iter().map(|b| b.ns.name.clone())).collect();
    drop(t);
    for n in names_ns {
        assert!(!netns_exists(&n), "{n} left behind");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
