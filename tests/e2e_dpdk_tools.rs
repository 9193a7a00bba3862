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

    // Capture: dpdk-dumpcap runs until its file holds 40 packets, then l4lb
    // is stopped under it (cleanly, its workers first) and dumpcap ends with
    // its primary. Not the other way round: when a capture ends while l4lb
    // forwards, DPDK 22.11's pdump removes its RX callback without waiting for
    // a worker inside it, and dumpcap then frees the mempool that callback
    // copies into — a worker held up by the VM inside the callback crashed
    // l4lb (SIGSEGV in rte_pcapng_copy) in about 1 run of 12 here
    // (docs/operations.md, "Packet capture").
    let pcap = dir.join("cap.pcapng");
    let dumpcap = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec timeout 60 dpdk-dumpcap --file-prefix {prefix} -i net_null0 -w {} 2>&1",
            pcap.display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let frames = || sh(&format!("tshark -r {} -T fields -e frame.len 2>/dev/null || true", pcap.display()));
    assert!(
        common::wait_for(std::time::Duration::from_secs(20), || frames().lines().count() >= 40),
        "dpdk-dumpcap captured fewer than 40 packets"
    );

    let (status, out) = l4lb.stop();
    assert!(status.success(), "{status:?}\n{out}");
    let dumpcap = dumpcap.wait_with_output().unwrap();
    let dumpcap_out = String::from_utf8_lossy(&dumpcap.stdout);
    assert!(dumpcap_out.contains("Packets captured"), "dpdk-dumpcap: {dumpcap_out}");
    let frames = frames();
    assert!(frames.lines().count() >= 40, "{dumpcap_out}\n{frames}");
    // net_null's frames are 64 zero bytes.
    assert!(frames.lines().all(|l| l.trim() == "64"), "{frames}");
    let run_dir = format!("/var/run/dpdk/{prefix}");
    assert!(
        !std::path::Path::new(&run_dir).exists(),
        "runtime files left behind: {}",
        sh(&format!("ls -la {run_dir}"))
    );
    let _ = std::fs::remove_dir_all(dir);
}
