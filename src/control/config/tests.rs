//! The configuration's own tests: parsing, the checks, what is derived.

use super::*;

const GOOD: &str = r#"
[dpdk]
lcores = "0@0,1@1"
devices = ["net_tap0,iface=a", "net_tap1,iface=b"]
hugepages = false

[[ports]]
name = "left"
device = "net_tap0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"
forward_to = "right"

[[ports]]
name = "right"
device = "net_tap1"
forward_to = "left"
"#;

fn check(text: &str) -> Result<Validated, ConfigError> {
    Config::parse(text, "t.toml")?.validate("t.toml")
}

#[test]
fn good_config() {
    let v = check(GOOD).unwrap();
    assert_eq!(v.main_lcore, 0);
    assert_eq!(v.workers, vec![1]);
    assert_eq!(v.forward, vec![Some(1), Some(0)]);
    assert_eq!(v.config.ports[0].ipv4.unwrap().to_string(), "198.18.0.1/24");
    let args = v.eal_args();
    assert!(args.windows(2).any(|w| w == ["--vdev", "net_tap0,iface=a"]));
    assert!(args.contains(&"--no-pci".to_string()));
    assert!(args.contains(&"--no-huge".to_string()));
    assert_eq!(v.rx_queues(0), 1);
    assert!(v.mbufs() >= 4096 && (v.mbufs() + 1).is_power_of_two());
}

#[test]
fn unknown_key_is_named() {
    let e = check(&GOOD.replace("hugepages = false", "hugepages = false\nhugepage = 1")).unwrap_err();
    assert_eq!(e.key, "dpdk.hugepage");
    assert!(e.reason.starts_with("unknown key"), "{e}");
    let e = check(&GOOD.replace("forward_to = \"left\"", "forward_to = \"left\"\nspeed = 1")).unwrap_err();
    assert_eq!(e.key, "ports[1].speed");
}

#[test]
fn bad_address_is_named() {
    let e = check(&GOOD.replace("198.18.0.1/24", "198.18.0.300/24")).unwrap_err();
    assert_eq!(e.key, "ports[0].ipv4");
    assert!(e.reason.contains("198.18.0.300"), "{e}");
    let e = check(&GOOD.replace("2001:db8::1/64", "2001:db8::1/129")).unwrap_err();
    assert_eq!(e.key, "ports[0].ipv6");
    assert!(e.reason.contains("prefix length"), "{e}");
}

#[test]
fn missing_section_is_named() {
    let text = GOOD.split("[[ports]]").next().unwrap();
    let e = check(text).unwrap_err();
    assert_eq!(e.key, "ports");
    assert!(e.reason.contains("missing"), "{e}");
    let e = check(&GOOD.replace("[dpdk]", "[dpdkx]")).unwrap_err();
    assert_eq!(e.key, "dpdkx");
}

#[test]
fn semantic_errors() {
    let cases = [
        ("lcores = \"0@0,1@1\"", "lcores = \"0\"", "dpdk.lcores"),
        ("hugepages = false", "hugepages = false\nin_memory = true", "dpdk.in_memory"),
        ("hugepages = false", "hugepages = false\nmbuf_data_room = 255", "dpdk.mbuf_data_room"),
        ("forward_to = \"right\"", "forward_to = \"nowhere\"", "ports[0].forward_to"),
        ("device = \"net_tap1\"", "device = \"net_tap7\"", "ports[1].device"),
        ("device = \"net_tap1\"", "device = \"net_tap0\"", "ports[1].device"),
        ("name = \"right\"", "name = \"left\"", "ports[1].name"),
        ("forward_to = \"left\"", "forward_to = \"left\"\nmtu = 20", "ports[1].mtu"),
        ("forward_to = \"left\"", "forward_to = \"left\"\ntx_queues = 0", "ports[1].tx_queues"),
    ];
    for (from, to, key) in cases {
        let e = check(&GOOD.replacen(from, to, 1)).unwrap_err();
        assert_eq!(e.key, key, "{from} -> {to}: {e}");
    }
    let e = check("[dpdk\n").unwrap_err();
    assert_eq!(e.key, "(syntax)");
    assert!(e.reason.contains("line 1"), "{e}");
}

#[test]
fn a_small_mbuf_data_room_is_named_against_the_port_whose_frames_it_cannot_hold() {
    let with = |room: &str| check(&GOOD.replace("hugepages = false", room)).unwrap();
    // Without the key, DPDK's default room holds any MTU up to 2030.
    assert_eq!(with("hugepages = false").mbuf_room_problem(&[1500, 1500]), None);
    let v = with("hugepages = false\nmbuf_data_room = 1646");
    assert_eq!(v.mbuf_room_problem(&[1500, 1500]), None);
    let why = v.mbuf_room_problem(&[1500, 9000]).unwrap();
    assert!(why.starts_with("dpdk.mbuf_data_room: 1646 bytes hold frames of up to 1518 bytes"), "{why}");
    assert!(why.contains("port `right` (MTU 9000) takes frames of 9018"), "{why}");
    let why = with("hugepages = false\nmbuf_data_room = 256").mbuf_room_problem(&[1500, 1500]).unwrap();
    assert!(why.contains("port `left`") && why.contains("up to 128 bytes"), "{why}");
}

#[test]
fn an_ipv6_vip_needs_an_egress_mtu_for_1280_bytes_plus_encapsulation() {
    let text = |mtu: &str| {
        format!(
            r#"
[dpdk]
lcores = "0@0,1@1"
devices = ["net_tap0,iface=a"]
[[ports]]
name = "p"
device = "net_tap0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"
{mtu}
[[services]]
name = "v6"
vip = "2001:db8:100::1"
protocol = "tcp"
port = 80
forwarding = "ipip"
backends = [{{ address = "2001:db8::11", mac = "02:00:00:00:00:11" }}]
"#
        )
    };
    // Set in the file: check refuses it.
    let e = check(&text("mtu = 1300")).unwrap_err();
    assert_eq!(e.key, "services[0].forwarding", "{e}");
    assert!(e.reason.contains("MTU 1300 is below 1280 + 40") && e.reason.contains("at least 1320"), "{e}");
    // Not set: the device's applies, which run checks once the port is up.
    let v = check(&text("")).unwrap();
    assert_eq!(v.mtu_problem(&[1500]), None);
    let why = v.mtu_problem(&[1300]).unwrap();
    assert!(why.starts_with("services[0].forwarding: port `p` MTU 1300 is below 1280 + 40"), "{why}");
    assert_eq!(check(&text("mtu = 1320")).map(|_| ()), Ok(()));
}

#[test]
fn pci_addresses() {
    assert!(is_pci_address("0000:01:00.0"));
    assert!(is_pci_address("3b:00.1"));
    assert!(!is_pci_address("net_tap0"));
    assert!(!is_pci_address("0000:01:00.8"));
    assert_eq!(device_name("net_tap0,iface=x"), "net_tap0");
    assert_eq!(tap_interface("net_tap0,iface=l4lb0"), Some("l4lb0"));
    assert_eq!(tap_interface("net_tap1, iface=x ,remote=eth0"), Some("x"));
    assert_eq!(tap_interface("net_pcap0,iface=eth0"), None);
}

/// A balancing configuration: one port with addresses, one service.
const BALANCING: &str = r#"
[dpdk]
lcores = "0@0,1@1"
devices = ["net_tap0,iface=data0"]
hugepages = false

[[ports]]
name = "lan"
device = "net_tap0"
ipv4 = "198.18.0.1/24"

[[services]]
name = "web"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
backends = [{ address = "198.18.0.11" }, { address = "198.18.0.12" }]
"#;

#[test]
fn kernel_interfaces_default_on_where_l4lb_balances_a_port_with_an_address() {
    let v = check(BALANCING).unwrap();
    let k = v.kernel_interfaces();
    assert_eq!(k.len(), 1);
    assert_eq!((k[0].port, k[0].name.as_str()), (0, "lan"));
    let args = v.eal_args();
    assert!(args.iter().any(|a| a.starts_with(&k[0].device()) && a.contains("iface=lan")), "{args:?}");
    let off = BALANCING
        .replace("ipv4 = \"198.18.0.1/24\"", "ipv4 = \"198.18.0.1/24\"\nkernel = { enabled = false }");
    assert!(check(&off).unwrap().kernel_interfaces().is_empty());
    // Plain forwarding has none.
    assert!(check(GOOD).unwrap().kernel_interfaces().is_empty());
}

#[test]
fn kernel_and_routing_errors_name_their_key() {
    let cases = [
        (
            "ipv4 = \"198.18.0.1/24\"",
            "ipv4 = \"198.18.0.1/24\"\nkernel = { name = \"a/b\" }",
            "ports[0].kernel.name",
        ),
        (
            "ipv4 = \"198.18.0.1/24\"",
            "ipv4 = \"198.18.0.1/24\"\nkernel = { name = \"data0\" }",
            "ports[0].kernel.name",
        ),
        (
            "ipv4 = \"198.18.0.1/24\"",
            "ipv4 = \"198.18.0.1/24\"\nkernel = { enabled = false, punt_unknown_vip_ports = true }",
            "ports[0].kernel.punt_unknown_vip_ports",
        ),
        ("port = 80\n", "port = 80\nmin_healthy = 3\n", "services[0].min_healthy"),
        ("port = 80\n", "port = 80\nmin_healthy = 0\n", "services[0].min_healthy"),
        ("[[services]]", "[routing]\ntable = 254\n\n[[services]]", "routing.table"),
        (
            "ipv4 = \"198.18.0.1/24\"",
            "ipv4 = \"198.18.0.1/24\"\nkernel = { enabled = false }\n\n[routing]\ntable = 100\n",
            "routing.table",
        ),
    ];
    for (from, to, key) in cases {
        let e = check(&BALANCING.replacen(from, to, 1)).unwrap_err();
        assert_eq!(e.key, key, "{to}: {e}");
    }
    assert_eq!(
        check(&BALANCING.replace("[[services]]", "[routing]\ntable = 100\n\n[[services]]"))
            .unwrap()
            .config
            .routing
            .table,
        100
    );
}

#[test]
fn bgp_errors_name_their_key() {
    let bgp = |body: &str| {
        BALANCING.replacen(
            "[[services]]",
            &format!("[routing]\ntable = 100\n\n[bgp]\nlocal_as = 65001\n{body}\n\n[[services]]"),
            1,
        )
    };
    let peer = "peers = [{ address = \"198.18.0.254\", remote_as = 65000 }]";
    let good = check(&bgp(peer)).unwrap();
    let b = good.config.bgp.as_ref().unwrap();
    assert_eq!((b.hold_time_s, b.peers[0].port, b.peers[0].name(0).as_str()), (9, 179, "peer0"));
    assert_eq!(crate::control::config::bgp_router_id(&good.config), Some("198.18.0.1".parse().unwrap()));
    let cases = [
        (bgp(peer).replace("[routing]\ntable = 100\n", ""), "routing.table"),
        (bgp(peer).replace("local_as = 65001", "local_as = 0"), "bgp.local_as"),
        (bgp(&format!("hold_time_s = 2\n{peer}")), "bgp.hold_time_s"),
        (bgp(&format!("bfd = {{ interval_ms = 5 }}\n{peer}")), "bgp.bfd.interval_ms"),
        (bgp(&format!("bfd = {{ multiplier = 0 }}\n{peer}")), "bgp.bfd.multiplier"),
        (bgp(&format!("communities = [\"65536:1\"]\n{peer}")), "bgp.communities[0]"),
        (bgp("peers = []"), "bgp.peers"),
        (bgp("peers = [{ address = \"198.19.0.1\", remote_as = 65000 }]"), "bgp.peers[0].address"),
        (bgp("peers = [{ address = \"2001:db8::fe\", remote_as = 65000 }]"), "bgp.peers[0].address"),
        (bgp("peers = [{ name = \"a-b\", address = \"198.18.0.254\", remote_as = 65000 }]"), "bgp.peers[0].name"),
        (
            bgp("peers = [{ address = \"198.18.0.254\", remote_as = 65000 }, { name = \"peer0\", address = \"198.18.0.253\", remote_as = 65000 }]"),
            "bgp.peers[1].name",
        ),
        (bgp("peers = [{ address = \"198.18.0.254\", remote_as = 65000, password = \"a\\\"b\" }]"), "bgp.peers[0].password"),
        (bgp("peers = [{ address = \"198.18.0.254\", remote_as = 65000, multihop = 0 }]"), "bgp.peers[0].multihop"),
        (bgp(&format!("{peer}\nrouter = 1")), "bgp.router"),
        (bgp(peer).replace("port = 80\n", "port = 80\nbgp = { med = -1 }\n"), "services[0].bgp.med"),
        (bgp(peer).replace("port = 80\n", "port = 80\nannounce = \"sometimes\"\n"), "services[0].announce"),
        (BALANCING.replace("port = 80\n", "port = 80\nbgp = { med = 1 }\n"), "services[0].bgp"),
        (BALANCING.replace("[[services]]", "[routing]\ntable = 100\nshutdown_drain_s = 9999\n\n[[services]]"), "routing.shutdown_drain_s"),
    ];
    for (text, key) in cases {
        let e = check(&text).unwrap_err();
        assert!(e.key.starts_with(key), "want {key}, got {e}\n{text}");
    }
    // A peer further away, with multihop.
    let far = check(&bgp("peers = [{ address = \"198.19.0.1\", remote_as = 65000, multihop = 3 }]")).unwrap();
    let p = &far.config.bgp.as_ref().unwrap().peers[0];
    assert_eq!(
        crate::control::config::peer_source(&far.config, p).map(|s| s.0.to_string()).as_deref(),
        Some("198.18.0.1")
    );
}

#[test]
fn sync_errors_name_their_key() {
    let sync = |body: &str| BALANCING.replacen("[[services]]", &format!("[sync]\n{body}\n\n[[services]]"), 1);
    let good = check(&sync("peers = [\"198.18.0.2\"]\nlisten = \"198.18.0.1\"")).unwrap();
    let y = good.config.sync.as_ref().unwrap();
    assert_eq!((y.port, y.listen), (4788, Some("198.18.0.1".parse().unwrap())));
    let cases = [
        (sync("peers = [\"198.18.0.1\"]"), "sync.peers[0]"),
        (sync("peers = [\"198.18.0.2\", \"198.18.0.2\"]"), "sync.peers[1]"),
        (sync("peers = [\"198.18.0.9\"]\nlisten = \"198.18.0.9\""), "sync.peers[0]"),
        (sync("peers = [\"2001:db8::9\"]\nlisten = \"198.18.0.1\""), "sync.peers[0]"),
        (sync("peers = [\"198.18.0.2\"]\nport = 0"), "sync.port"),
        (sync("peers = [\"198.18.0.2\"]\ncapacity = 0"), "sync.capacity"),
        (sync("peers = [\"198.18.0.2\"]\nqueue = 0"), "sync.queue"),
        (sync("peers = [\"198.18.0.2\"]\nwarmup_timeout_s = 601"), "sync.warmup_timeout_s"),
        (sync("peers = [\"198.18.0.2\"]\nlisten = \"x\""), "sync.listen"),
    ];
    for (text, key) in cases {
        let e = check(&text).unwrap_err();
        assert!(e.key.starts_with(key), "want {key}, got {e}\n{text}");
    }
}

#[test]
fn access_errors_name_their_key_and_files_are_read() {
    let dir = std::env::temp_dir().join(format!("l4lb-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("deny.txt"), "# bad networks\n198.18.9.0/24\n\n2001:db8:9::/48  # and v6\n")
        .unwrap();
    std::fs::write(dir.join("bad.txt"), "198.18.9.0/24\n198.18.9.1/24\n").unwrap();
    let file = dir.join("l4lb.toml");
    let file = file.to_str().unwrap();
    let with = |global: &str, own: &str| {
        BALANCING
            .replacen("[[services]]", &format!("[access]\n{global}\n\n[[services]]"), 1)
            .replace("port = 80\n", &format!("port = 80\naccess = {{ {own} }}\n"))
    };
    let check_at = |text: &str| Config::parse(text, file).and_then(|c| c.validate(file));
    let good = check_at(&with("deny_file = \"deny.txt\"", "allow = [\"198.18.0.0/15\"]")).unwrap();
    let acl = good.access[0].as_ref().unwrap();
    assert_eq!(acl.prefixes, 3);
    assert!(!acl.permits(&crate::balancer::flow::ip16("198.18.9.7".parse().unwrap())));
    assert!(acl.permits(&crate::balancer::flow::ip16("198.18.8.7".parse().unwrap())));
    assert!(check_at(&with("", "")).unwrap().access[0].is_none());
    let cases = [
        (with("allow = []", ""), "access.allow", "empty allow list"),
        (with("", "deny = [\"198.18.0.1/15\"]"), "services[0].access.deny[0]", "did you mean 198.18.0.0/15"),
        (with("deny = [\"1.2.3.4/40\"]", ""), "access.deny[0]", "longer than an IPv4"),
        (with("deny_file = \"missing.txt\"", ""), "access.deny_file", "cannot read"),
        (with("", "allow_file = \"bad.txt\""), "services[0].access.allow_file", "bad.txt:2: 198.18.9.1/24"),
        (with("", "permit = []"), "services[0].access.permit", "unknown key"),
        (with("deny_file = \"/dev/zero\"", ""), "access.deny_file", "not a regular file"),
        (with("deny_file = \".\"", ""), "access.deny_file", "not a regular file"),
    ];
    for (text, key, why) in cases {
        let e = check_at(&text).unwrap_err();
        assert!(e.key.starts_with(key) && e.to_string().contains(why), "want {key} ({why}), got {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quota_errors_name_their_key() {
    let with = |quota: &str, more: &str| {
        let text = BALANCING.replace("port = 80\n", &format!("port = 80\nquota = {{ {quota} }}\n{more}"));
        Config::parse(&text, "q.toml").and_then(|c| c.validate("q.toml"))
    };
    let good = with("new_flows_per_s = 5000, flow_table_share = 0.25", "").unwrap();
    let q = good.config.services[0].quota.as_ref().unwrap();
    assert_eq!(
        (q.new_flows_per_s, q.flow_table_share, q.over_quota),
        (Some(5000), Some(0.25), OverQuotaName::Drop)
    );
    assert!(with("flow_table_share = 1.0, over_quota = \"stateless\"", "").is_ok());
    let cases = [
        ("", "", "services[0].quota.new_flows_per_s", "sets no limit"),
        ("new_flows_per_s = 0", "", "services[0].quota.new_flows_per_s", "must be 1 to"),
        (
            "new_flows_burst = 10, flow_table_share = 0.5",
            "",
            "services[0].quota.new_flows_burst",
            "needs new_flows_per_s",
        ),
        ("flow_table_share = 0", "", "services[0].quota.flow_table_share", "above 0"),
        ("flow_table_share = 1.5", "", "services[0].quota.flow_table_share", "at most 1"),
        ("flow_table_share = 0.0001", "", "services[0].quota.flow_table_share", "a thousandth"),
        (
            "new_flows_per_s = 10, over_quota = \"stateless\"",
            "scheduler = \"round-robin\"\n",
            "services[0].quota.over_quota",
            "hashing scheduler",
        ),
        (
            "new_flows_per_s = 10, over_quota = \"stateless\"",
            "persistence_s = 60\n",
            "services[0].quota.over_quota",
            "persistence",
        ),
        (
            "new_flows_per_s = 10, over_quota = \"queue\"",
            "",
            "services[0].quota.over_quota",
            "unknown variant",
        ),
        ("new_flows = 10", "", "services[0].quota.new_flows", "unknown key"),
    ];
    for (quota, more, key, why) in cases {
        let e = with(quota, more).unwrap_err();
        assert!(e.key.starts_with(key) && e.to_string().contains(why), "want {key} ({why}), got {e}");
    }
}

#[test]
fn https_and_command_check_errors_name_their_key() {
    let dir = std::env::temp_dir().join(format!("l4lb-checkcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let file = dir.join("l4lb.toml");
    let file = file.to_str().unwrap();
    let with = |health: &str| {
        let text = BALANCING.replace("port = 80\n", &format!("port = 80\nhealth = {{ {health} }}\n"));
        Config::parse(&text, file).and_then(|c| c.validate(file))
    };
    let ok =
        with("check = \"https\", expect_status = [200, 204], expect_body = \"ok\", tls = { verify = false }")
            .unwrap();
    let h = ok.config.services[0].health.as_ref().unwrap();
    assert_eq!(h.expect_status.0, [200, 204]);
    assert!(ok.tls[0].is_some(), "the service's TLS client is made when the file is checked");
    assert!(with("check = \"command\", command = [\"/bin/true\"]").unwrap().tls[0].is_none());
    assert_eq!(
        with("check = \"http\", expect_status = 301").unwrap().config.services[0]
            .health
            .as_ref()
            .unwrap()
            .expect_status
            .0,
        [301]
    );
    let cases = [
        ("check = \"http\", expect_status = []", "services[0].health.expect_status", "a list of them"),
        ("check = \"http\", expect_status = [200, 99]", "services[0].health.expect_status", "100 to 599"),
        (
            "check = \"tcp\", expect_body = \"x\"",
            "services[0].health.expect_body",
            "does not apply to a `tcp` check",
        ),
        ("check = \"http\", tls = { verify = false }", "services[0].health.tls", "does not apply"),
        ("check = \"http\", command = [\"/bin/true\"]", "services[0].health.command", "does not apply"),
        ("check = \"command\"", "services[0].health.command", "needs the program"),
        ("check = \"command\", command = [\"true\"]", "services[0].health.command", "absolute path"),
        (
            "check = \"https\", tls = { ca_file = \"missing.pem\" }",
            "services[0].health.tls.ca_file",
            "cannot read",
        ),
        (
            "check = \"https\", tls = { ca_file = \"empty.pem\" }",
            "services[0].health.tls.ca_file",
            "no certificate",
        ),
        (
            "check = \"https\", tls = { verify = false, cert_file = \"empty.pem\" }",
            "services[0].health.tls.key_file",
            "needs its key_file",
        ),
        (
            "check = \"https\", tls = { verify = false, sni = \"x\" }",
            "services[0].health.tls.sni",
            "unknown key",
        ),
    ];
    for (health, key, why) in cases {
        let e = with(health).unwrap_err();
        assert!(e.key.starts_with(key) && e.to_string().contains(why), "want {key} ({why}), got {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn passive_health_errors_name_their_key() {
    let with = |p: &str| {
        let text = BALANCING.replace("port = 80\n", &format!("port = 80\npassive_health = {{ {p} }}\n"));
        Config::parse(&text, "p.toml").and_then(|c| c.validate("p.toml"))
    };
    let ok = with("").unwrap();
    let p = ok.config.services[0].passive_health.as_ref().unwrap();
    assert_eq!((p.window_s, p.min_flows, p.syn_retried_share, p.down), (10, 20, 0.5, false));
    for (p, key, why) in [
        ("window_s = 0", "services[0].passive_health.window_s", "1 to 3600"),
        ("min_flows = 0", "services[0].passive_health.min_flows", "1 to"),
        ("syn_retried_share = 1.5", "services[0].passive_health.syn_retried_share", "at most 1"),
        ("share = 0.5", "services[0].passive_health.share", "unknown key"),
    ] {
        let e = with(p).unwrap_err();
        assert!(e.key.starts_with(key) && e.to_string().contains(why), "want {key} ({why}), got {e}");
    }
}

#[test]
fn handshake_response_time_is_for_tcp_services() {
    let with =
        |proto: &str| {
            let text = BALANCING
                .replace("port = 80\n", "port = 80\nresponse_time = \"handshake\"\n")
                .replacen("protocol = \"tcp\"", &format!("protocol = \"{proto}\""), 1);
            Config::parse(&text, "r.toml").and_then(|c| c.validate("r.toml"))
        };
    assert!(with("tcp").is_ok());
    let e = with("udp").unwrap_err();
    assert!(e.key == "services[0].response_time" && e.to_string().contains("TCP service only"), "{e}");
}

#[test]
fn health_checks_take_the_vips_path_where_they_can_and_say_why_not_when_told_to() {
    let with =
        |health: &str| BALANCING.replace("port = 80\n", &format!("port = 80\nhealth = {{ {health} }}\n"));
    let via_vip = |text: &str| {
        let v = check(text).unwrap();
        let s = &v.config.services[0];
        s.backends.iter().map(|b| checked_via_vip(&v.config, s, b)).collect::<Vec<_>>()
    };
    assert_eq!(via_vip(&with("check = \"http\"")), [true, true], "the default where the mode allows");
    assert_eq!(via_vip(&with("check = \"tcp\", via = \"vip\"")), [true, true]);
    assert_eq!(via_vip(&with("check = \"tcp\", via = \"backend\"")), [false, false]);
    assert_eq!(via_vip(&with("check = \"icmp\"")), [false, false], "ICMP cannot");
    assert_eq!(via_vip(BALANCING), [false, false], "no checks");
    let no_kernel = with("check = \"tcp\"")
        .replace("ipv4 = \"198.18.0.1/24\"", "ipv4 = \"198.18.0.1/24\"\nkernel = { enabled = false }");
    assert_eq!(via_vip(&no_kernel), [false, false], "no kernel interface");
    let v = check(&with("check = \"tcp\"")).unwrap();
    let s = &v.config.services[0];
    assert_eq!(vip_path_source(&v.config, s, s.backends[0].address), Some("198.18.0.1".parse().unwrap()));
    // Said outright where it cannot be: the key and the reason.
    let cases = [
        (with("check = \"icmp\", via = \"vip\""), "`icmp` check cannot"),
        (no_kernel.replace("check = \"tcp\"", "check = \"tcp\", via = \"vip\""), "has no kernel interface"),
        (
            with("check = \"tcp\", via = \"vip\"")
                .replace("port = 80\n", "port = 80\nforwarding = \"ipip\"\n")
                .replace("{ address = \"198.18.0.12\" }", "{ address = \"2001:db8::12\" }"),
            "is IPv6 and the VIP IPv4",
        ),
        (with("check = \"tcp\", via = \"sideways\""), "unknown variant"),
    ];
    for (text, why) in cases {
        let e = check(&text).unwrap_err();
        assert_eq!(e.key, "services[0].health.via", "{e}");
        assert!(e.reason.contains(why), "{e}");
    }
}

/// A directory with `l4lb.toml` (GOOD without plain forwarding, after
/// `main_extra`) and `files`.
fn include_dir(tag: &str, main_extra: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("l4lb-include-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("services.d")).unwrap();
    let main = GOOD.replace("forward_to = \"right\"", "").replace("forward_to = \"left\"", "");
    std::fs::write(dir.join("l4lb.toml"), format!("{main_extra}\n{main}")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn service_text(name: &str, vip: &str, weight: u32) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\nvip = \"{vip}\"\nprotocol = \"tcp\"\nport = 80\n\
         backends = [{{ address = \"198.18.0.10\", mac = \"02:00:00:00:00:0a\", weight = {weight} }}]\n"
    )
}

#[test]
fn included_files_add_services_in_order_and_a_reload_parses_only_changed_ones() {
    let (a, b, c) = (
        service_text("a", "198.18.100.1", 1),
        service_text("b", "198.18.100.2", 1),
        service_text("c", "198.18.100.3", 1),
    );
    let dir = include_dir(
        "order",
        "include = [\"services.d\", \"extra.toml\"]",
        &[
            ("services.d/2-b.toml", &b),
            ("services.d/1-a.toml", &a),
            ("services.d/notes.txt", "not toml"),
            ("extra.toml", &c),
        ],
    );
    let main = dir.join("l4lb.toml");
    let mut cache = ConfigCache::default();
    let v = Config::load_cached(&main, &mut cache).unwrap();
    let names: Vec<&str> = v.config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"], "a directory's files by name, then the next entry");
    assert_eq!((cache.len(), cache.parsed()), (4, 4));
    assert_eq!(Config::load(&main).unwrap().config, v.config, "the same without a cache");

    // One file changes: it alone is parsed, and the change is seen.
    std::fs::write(dir.join("services.d/2-b.toml"), service_text("b", "198.18.100.2", 7)).unwrap();
    let v = Config::load_cached(&main, &mut cache).unwrap();
    assert_eq!(cache.parsed(), 1);
    assert_eq!(v.config.services[1].backends[0].weight, 7);
    let v2 = Config::load_cached(&main, &mut cache).unwrap();
    assert_eq!((cache.parsed(), v2.config), (0, v.config));

    // A file that goes is forgotten; an empty directory adds nothing.
    std::fs::remove_file(dir.join("services.d/1-a.toml")).unwrap();
    std::fs::remove_file(dir.join("services.d/2-b.toml")).unwrap();
    let v = Config::load_cached(&main, &mut cache).unwrap();
    assert_eq!(v.config.services.len(), 1);
    assert_eq!(cache.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_in_included_files_name_the_file_and_the_key() {
    let a = service_text("a", "198.18.100.1", 1);
    let cases: Vec<(&str, String, String, &str, &str)> = vec![
        // (include, file name, its text, the file the error names, its key and reason)
        (
            "\"svc.toml\"",
            "svc.toml".into(),
            format!("{a}\n[control]\nsocket = \"/x\"\n"),
            "svc.toml",
            "control: unknown key (known keys here: `services`)",
        ),
        (
            "\"svc.toml\"",
            "svc.toml".into(),
            a.replace("198.18.100.1", "198.18.100.300"),
            "svc.toml",
            "services[0].vip",
        ),
        ("\"svc.toml\"", "svc.toml".into(), a.clone() + "\n" + &a, "svc.toml", "services[1].name"),
        (
            "\"svc.toml\"",
            "svc.toml".into(),
            "[[services]]\nname = \"x\"\n".into(),
            "svc.toml",
            "services[0].vip: required key is missing",
        ),
        ("\"missing.toml\"", "svc.toml".into(), a.clone(), "l4lb.toml", "include[0]: cannot read"),
        ("\"svc.toml\", \"svc.toml\"", "svc.toml".into(), a.clone(), "l4lb.toml", "include[1]: "),
        ("\"l4lb.toml\"", "svc.toml".into(), a.clone(), "l4lb.toml", "include[0]: "),
    ];
    for (i, (include, name, text, file, key)) in cases.iter().enumerate() {
        let dir = include_dir(&format!("err{i}"), &format!("include = [{include}]"), &[(name, text)]);
        let e = Config::load(&dir.join("l4lb.toml")).unwrap_err();
        assert!(e.file.ends_with(file), "case {i}: {e}");
        assert!(format!("{}: {}", e.key, e.reason).starts_with(key), "case {i}: {e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The main file is read in pieces (one per `[[services]]`) where that is
/// safe; whatever the text, `load` must say what parsing it whole says.
#[test]
fn a_file_read_in_pieces_reads_as_the_whole() {
    let a = service_text("a", "198.18.100.1", 1);
    let b = service_text("b", "198.18.100.2", 2);
    let health = "[services.health]\ncheck = \"tcp\"\ninterval_ms = 1000\n";
    let table_backends = "[[services]]\nname = \"t\"\nvip = \"198.18.100.4\"\nprotocol = \"udp\"\nport = 53\n\
                          [[services.backends]]\naddress = \"198.18.0.11\"\nmac = \"02:00:00:00:00:0b\"\n\
                          [[ services.backends ]] # a comment\naddress = \"198.18.0.12\"\nmac = \"02:00:00:00:00:0c\"\n";
    let texts = [
        format!("{a}\n{b}"),
        format!("{a}{health}\n{table_backends}\n{b}"),
        // Read whole: a table after the services, a multi-line string.
        format!("{a}\n[access]\ndeny = [\"198.18.9.0/24\"]\n"),
        format!("{a}\n{}", b.replace("name = \"b\"", "name = \"\"\"b\"\"\"")),
        // Errors: in the second service, with its line; a duplicate; TOML's own.
        format!("{a}\n{}", b.replace("198.18.100.2", "198.18.100.300")),
        format!("{a}\n{}", b.replace("port = 80", "port = 80\nbogus = 1")),
        format!("{a}\n{a}"),
        format!("services = []\n{a}"),
        format!("{a}\nservices.x = 1\n"),
        format!("{a}\nname = \"again\"\n"),
    ];
    let dir = std::env::temp_dir().join(format!("l4lb-pieces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("l4lb.toml");
    let main = GOOD.replace("forward_to = \"right\"", "").replace("forward_to = \"left\"", "");
    let mut cache = ConfigCache::default();
    for (i, t) in texts.iter().enumerate() {
        let text = format!("{main}\n{t}");
        std::fs::write(&path, &text).unwrap();
        let file = path.display().to_string();
        let whole = Config::parse(&text, &file).and_then(|c| c.validate(&file)).map(|v| v.config);
        assert_eq!(Config::load(&path).map(|v| v.config), whole, "text {i}");
        assert_eq!(Config::load_cached(&path, &mut cache).map(|v| v.config), whole, "text {i}, cached");
    }
    let pieces = |t: &str| include::split_services(t).map(|(_, c)| c.len());
    let counts: Vec<Option<usize>> = texts[..4].iter().map(|t| pieces(&format!("{main}\n{t}"))).collect();
    assert_eq!(counts, [Some(2), Some(3), None, None], "pieces where safe, else whole");

    // One service's text changes: the file is parsed again, that service alone.
    std::fs::write(&path, format!("{main}\n{}", texts[1])).unwrap();
    Config::load_cached(&path, &mut cache).unwrap();
    std::fs::write(&path, format!("{main}\n{}", texts[1].replace("weight = 2", "weight = 5"))).unwrap();
    let v = Config::load_cached(&path, &mut cache).unwrap();
    assert_eq!((cache.parsed(), v.config.services[2].backends[0].weight), (1, 5));
    assert_eq!(cache.len(), 1, "one file");
    Config::load_cached(&path, &mut cache).unwrap();
    assert_eq!(cache.parsed(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
