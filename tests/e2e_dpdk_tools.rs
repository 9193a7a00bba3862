//! DPDK's own tools against a running l4lb: `dpdk-telemetry.py` reads its
//! ethdev stats and `dpdk-dumpcap` captures on its port. Both attach through
//! EAL's runtime files, so this l4lb runs on hugepages, not `--in-memory`.
//! (Named e2e_ to run alone: its net_null port keeps a worker busy.)
mod common;

use common::netns::{require_root, sh, sh_try, unique, L4lb};

#[test]
fn telemetry_and_dumpcap_attach_to_a_running_l4lb() {
    require_root();
    assert!(
        common::hugepages_free(),
        "needs free hugepages: run scripts/setup.sh (scripts/setup-hugepages.sh)"
    );
    let dir = std::env::temp_dir().join(unique("l4lb-tools-"));
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = unique("l4lbtools");
    let socket = dir.join("ctl.sock");
    let config = format!(
        r#"
[dpdk]
lcores = "{lcores}"
devices = ["net_null0"]
file_prefix = "{prefix}"
[workers]
flow_table_capacity = 65536
[[ports]]
name = "lan"
device = "net_null0"
ipv4 = "198.18.0.1/24"
[control]
socket = "{socket}"
metrics_address = ""
[[services]]
name = "web"
vip = "198.18.100.1"
protocol = "tcp"
port = 80
backends = [{{ address = "198.18.0.11", mac = "02:00:00:00:0b:11" }}]
"#,
        lcores = common::lcore_map(2),
        socket = socket.display()
    );
    let l4lb = L4lb::start(&config, &dir);
    assert!(
        l4lb.lines_with(&format!("packet capture on: dpdk-dumpcap --file-prefix {prefix}")).len() == 1,
        "{}",
        l4lb.transcript()
    );

    // Telemetry: the port's stats, as EAL's telemetry socket serves them.
    let out = sh(&format!("echo '/ethdev/stats,0' | timeout 10 dpdk-telemetry.py -f {prefix}"));
    let json = out.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no answer: {out}"));
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let rx = v["/ethdev/stats"]["ipackets"].as_u64().unwrap();
    assert!(rx > 0, "{v}");
    // ...and agrees with l4lb's own count (taken after it, so at least as big).
    let stats: serde_json::Value = {
        let (ok, text) =
            sh_try(&format!("{} ctl --socket {} --json stats", env!("CARGO_BIN_EXE_l4lb"), socket.display()));
        assert!(ok, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    assert!(stats["ports"][0]["rx_packets"].as_u64().unwrap() >= rx);

    // Capture: at least 40 packets from the port into a pcapng that tshark reads back.
    let pcap = dir.join("cap.pcapng");
    let (ok, out) = sh_try(&format!(
        "timeout 30 dpdk-dumpcap --file-prefix {prefix} -i net_null0 -c 40 -w {} 2>&1",
        pcap.display()
    ));
    assert!(ok, "dpdk-dumpcap failed: {out}");
    let frames = sh(&format!("tshark -r {} -T fields -e frame.len 2>/dev/null", pcap.display()));
    // (It stops after the burst that reaches the count.)
    assert!(frames.lines().count() >= 40, "{out}\n{frames}");
    // net_null's frames are 64 zero bytes.
    assert!(frames.lines().all(|l| l.trim() == "64"), "{frames}");

    let (status, out) = l4lb.stop();
    assert!(status.success(), "{out}");
    assert!(!std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists(), "runtime files left behind");
    let _ = std::fs::remove_dir_all(dir);
}
