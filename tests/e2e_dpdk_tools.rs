//! DPDK's own tools against a running l4lb: `dpdk-telemetry.py` reads its
//! ethdev stats and `dpdk-dumpcap` captures on its port. Both attach through
//! EAL's runtime files, so this l4lb runs on hugepages, not `--in-memory`.
//! (Named e2e_ to run alone: its net_null port keeps a worker busy.)
// Needs DPDK and root: the full tier (scripts/test.sh), not the fast one.
#![cfg(feature = "dpdk")]
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
# In the root namespace: no kernel interface.
kernel = {{ enabled = false }}
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
    let mut l4lb = L4lb::start_with_env(None, &config, &dir, &[("L4LB_TEST_CAPTURE_STALL_US", "20000")]);
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

    // Captures that end under load: dpdk-dumpcap stops itself after 40
    // packets (`-c 40`) while the worker keeps receiving, three times in a
    // row. A test stall holds the worker 20 ms inside the capture callback
    // before each copy, so every disable arrives while a worker is inside:
    // l4lb must answer it only after the worker has left, because dumpcap
    // then frees the mempool the callback copies into. (DPDK 22.11's own
    // server answered at once, and l4lb crashed with SIGSEGV in
    // rte_pcapng_copy about once in 12 such captures on a 2-vCPU VM even
    // without the stall; docs/operations.md, "Packet capture".)
    let frames = |pcap: &std::path::Path| {
        sh(&format!("tshark -r {} -T fields -e frame.len 2>/dev/null || true", pcap.display()))
    };
    for round in 0..3 {
        let pcap = dir.join(format!("cap{round}.pcapng"));
        let (ok, out) = sh_try(&format!(
            "timeout 60 dpdk-dumpcap --file-prefix {prefix} -i net_null0 -c 40 -w {} 2>&1",
            pcap.display()
        ));
        // A dumpcap that cannot reach its primary ("Connection refused") means
        // l4lb died ending the capture before.
        assert!(ok, "dpdk-dumpcap round {round} failed: {out}\nl4lb:\n{}", l4lb.transcript());
        // dumpcap prints its running count ("Packets captured: 0 32 64"): it
        // stops at the first burst that reaches 40.
        let captured: u64 = out
            .lines()
            .find(|l| l.contains("Packets captured:"))
            .and_then(|l| l.split(|c: char| !c.is_ascii_digit()).rfind(|t| !t.is_empty()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("dpdk-dumpcap round {round}: {out}\n{}", l4lb.transcript()));
        assert!(captured >= 40, "{out}");
        // dumpcap's own count comes from the statistics l4lb keeps for it.
        let received = out
            .lines()
            .find_map(|l| l.strip_prefix("Packets received/dropped on interface 'net_null0': "))
            .unwrap_or_else(|| panic!("no interface counts: {out}"));
        let (got, dropped) = received.trim().split_once('/').unwrap();
        assert!(got.parse::<u64>().unwrap() >= captured, "{out}");
        assert_eq!(dropped.split_whitespace().next().unwrap().parse::<u64>().unwrap(), 0, "{out}");
        let f = frames(&pcap);
        assert_eq!(f.lines().count() as u64, captured, "round {round}: {out}\n{f}");
        // net_null's frames are 64 zero bytes.
        assert!(f.lines().all(|l| l.trim() == "64"), "{f}");
        let stopped = l4lb.wait_line(std::time::Duration::from_secs(10), |l| {
            l.contains("capture stopped on net_null0 (rx queues 0, tx queues 0)")
        });
        assert!(stopped.is_some(), "round {round}: no stop line\n{}", l4lb.transcript());
    }
    assert_eq!(l4lb.lines_with("capture started on net_null0 (rx queues 0, tx queues 0, pcapng").len(), 3);

    // A capture filter (dumpcap compiles it to BPF, l4lb runs it on each
    // packet): net_null's frames start with a zero byte, so none passes.
    let pcap = dir.join("cap-filtered.pcapng");
    let (ok, out) = sh_try(&format!(
        "timeout 60 dpdk-dumpcap --file-prefix {prefix} -i net_null0 -f 'ether[0] = 1' -a duration:1 -w {} 2>&1",
        pcap.display()
    ));
    assert!(ok, "{out}\nl4lb:\n{}", l4lb.transcript());
    assert_eq!(frames(&pcap).lines().count(), 0, "{out}");
    let stopped = l4lb
        .wait_line(std::time::Duration::from_secs(10), |l| l.contains("capture stopped on net_null0"))
        .unwrap_or_else(|| panic!("no stop line\n{}", l4lb.transcript()));
    let filtered: u64 = stopped
        .split(" filtered out")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stopped}"));
    assert!(filtered > 0 && stopped.contains(": 0 packets copied"), "{stopped}");
    assert_eq!(l4lb.lines_with("with a filter)").len(), 1, "{}", l4lb.transcript());

    // A dumpcap killed mid-capture never sends its disable: l4lb notices that
    // its process is gone, unhooks the capture (which would otherwise keep the
    // worker copying into a ring nobody drains and refuse every later
    // capture on the port), and the next capture works.
    let pcap = dir.join("cap-killed.pcapng");
    let mut killed = std::process::Command::new("dpdk-dumpcap")
        .args(["--file-prefix", &prefix, "-i", "net_null0", "-w"])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        common::wait_for(std::time::Duration::from_secs(20), || frames(&pcap).lines().count() >= 10),
        "the dumpcap to kill captured fewer than 10 packets\n{}",
        l4lb.transcript()
    );
    killed.kill().unwrap();
    killed.wait().unwrap();
    let removed = l4lb.wait_line(std::time::Duration::from_secs(10), |l| {
        l.contains("capture on net_null0 (rx queue 0) removed: the process that started it is gone")
    });
    assert!(removed.is_some(), "{}", l4lb.transcript());
    let pcap = dir.join("cap-after-kill.pcapng");
    let (ok, out) = sh_try(&format!(
        "timeout 60 dpdk-dumpcap --file-prefix {prefix} -i net_null0 -c 40 -w {} 2>&1",
        pcap.display()
    ));
    assert!(ok && out.contains("Packets captured"), "{out}\nl4lb:\n{}", l4lb.transcript());
    assert!(frames(&pcap).lines().count() >= 40, "{out}");

    // A capture still running when l4lb stops: l4lb unhooks it and exits
    // cleanly; dumpcap ends with its primary.
    let pcap = dir.join("cap-last.pcapng");
    let dumpcap = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec timeout 60 dpdk-dumpcap --file-prefix {prefix} -i net_null0 -w {} 2>&1",
            pcap.display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        common::wait_for(std::time::Duration::from_secs(20), || frames(&pcap).lines().count() >= 10),
        "dpdk-dumpcap captured fewer than 10 packets"
    );
    let (status, out) = l4lb.stop();
    assert!(status.success(), "{status:?}\n{out}");
    let dumpcap = dumpcap.wait_with_output().unwrap();
    let dumpcap_out = String::from_utf8_lossy(&dumpcap.stdout);
    assert!(dumpcap_out.contains("Packets captured"), "dpdk-dumpcap: {dumpcap_out}");
    let run_dir = format!("/var/run/dpdk/{prefix}");
    assert!(
        !std::path::Path::new(&run_dir).exists(),
        "runtime files left behind: {}",
        sh(&format!("ls -la {run_dir}"))
    );
    let _ = std::fs::remove_dir_all(dir);
}
