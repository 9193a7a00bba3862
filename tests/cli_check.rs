//! `l4lb check`: good configs pass; broken ones exit 2 naming file, key, reason.
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::netns::Scratch;

const GOOD: &str = r#"
[dpdk]
lcores = "0@0,1@1"
devices = ["net_tap0,iface=l4lb0", "net_tap1,iface=l4lb1"]

[[ports]]
name = "outside"
device = "net_tap0"
ipv4 = "198.18.0.1/24"
forward_to = "inside"

[[ports]]
name = "inside"
device = "net_tap1"
forward_to = "outside"
"#;

/// `text` written to file `name` in a fresh directory of its own.
fn scratch(name: &str, text: &str) -> (Scratch, PathBuf) {
    let dir = Scratch::new("l4lb-check-");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn check(name: &str, text: &str) -> (i32, String, String) {
    let (_dir, path) = scratch(name, text);
    let out =
        Command::new(env!("CARGO_BIN_EXE_l4lb")).args(["check", "--config"]).arg(&path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn good_config_passes() {
    let (code, out, _) = check("good.toml", GOOD);
    assert_eq!(code, 0);
    assert!(out.contains("good.toml: OK (2 ports, 1 workers"), "{out}");
}

#[test]
fn shipped_configs_pass() {
    // config/*.toml: the examples and the Debian package's /etc/l4lb/l4lb.toml.
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out =
            Command::new(env!("CARGO_BIN_EXE_l4lb")).args(["check", "--config"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn unknown_key_exits_2_with_key_and_reason() {
    let (code, _, err) =
        check("unknown.toml", &GOOD.replace("name = \"inside\"", "name = \"inside\"\nspeed_gbps = 100"));
    assert_eq!(code, 2);
    assert!(err.contains("unknown.toml: ports[1].speed_gbps: unknown key"), "{err}");
}

#[test]
fn bad_address_exits_2_with_key_and_reason() {
    let (code, _, err) = check("badaddr.toml", &GOOD.replace("198.18.0.1/24", "198.18.0.1.5/24"));
    assert_eq!(code, 2);
    assert!(err.contains("badaddr.toml: ports[0].ipv4: `198.18.0.1.5` is not a valid IPv4 address"), "{err}");
}

#[test]
fn missing_section_exits_2_with_key_and_reason() {
    let no_dpdk = GOOD.replace("[dpdk]", "");
    let text: String = no_dpdk
        .lines()
        .filter(|l| !l.starts_with("lcores") && !l.starts_with("devices"))
        .collect::<Vec<_>>()
        .join("\n");
    let (code, _, err) = check("nodpdk.toml", &text);
    assert_eq!(code, 2);
    assert!(err.contains("nodpdk.toml: dpdk: required key is missing"), "{err}");
}

#[test]
fn missing_file_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_l4lb"))
        .args(["check", "--config", "/nonexistent/l4lb.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/l4lb.toml: (file): cannot read"));
}

#[test]
fn an_interface_name_linux_refuses_is_refused_by_check() {
    let long = GOOD.replace("iface=l4lb0", "iface=l4lb-interface-0");
    let (code, _, err) = check("longif.toml", &long);
    assert_eq!(code, 2);
    assert!(
        err.contains("longif.toml: dpdk.devices[0]: interface name `l4lb-interface-0` (iface=) is 16 characters; Linux allows at most 15"),
        "{err}"
    );
    // 15 is fine.
    let (code, _, err) = check("fifteen.toml", &GOOD.replace("iface=l4lb0", "iface=l4lb-interface0"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn check_warns_of_lcores_on_cpus_this_machine_lacks() {
    // CPU 900: no machine this runs on has it.
    let (code, out, err) =
        check("cpus.toml", &GOOD.replace("lcores = \"0@0,1@1\"", "lcores = \"0@0,1@900\""));
    assert_eq!(code, 0, "the file may be meant for another machine: {err}");
    assert!(out.contains("OK"), "{out}");
    assert!(
        err.starts_with("warning: ") && err.contains("cpus.toml: dpdk.lcores: lcore 1 is pinned to CPU 900"),
        "{err}"
    );
}

// Needs the dpdk feature (`run`).
#[cfg(feature = "dpdk")]
#[test]
fn run_refuses_lcores_on_cpus_this_machine_lacks_before_eal_starts() {
    let (_dir, path) = scratch("cpus.toml", &GOOD.replace("lcores = \"0@0,1@1\"", "lcores = \"0@0,1@900\""));
    let out = Command::new(env!("CARGO_BIN_EXE_l4lb")).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // One line, naming the key; not EAL's usage text.
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains("dpdk.lcores: lcore 1 is pinned to CPU 900"), "{err}");
}

// Needs DPDK (EAL's own error): the full tier.
#[cfg(feature = "dpdk")]
#[test]
fn run_with_a_missing_device_fails_with_one_clear_error() {
    let (_dir, path) = scratch(
        "missing.toml",
        "[dpdk]\nlcores = \"0@0,1@0\"\ndevices = [\"net_nosuchdriver0\"]\nhugepages = false\n\n[[ports]]\nname = \"a\"\ndevice = \"net_nosuchdriver0\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_l4lb")).args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].contains("starting DPDK failed") && ours[0].contains("No such device"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bgp_errors_name_the_key_and_birds_parser_sees_the_file_l4lb_would_write() {
    let fleet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/fleet.toml")).unwrap();
    let (code, _, err) = check("bad-peer.toml", &fleet.replace("198.18.0.254", "198.19.0.254"));
    assert_eq!(code, 2);
    assert!(err.contains("bad-peer.toml: bgp.peers[0].address: 198.19.0.254 is on no subnet"), "{err}");
    // Where BIRD is installed, `check` has it parse the configuration.
    let bird = Command::new("bird").arg("--version").output().is_ok();
    let (code, out, err) = check("fleet.toml", &fleet);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err.contains("BIRD's own check skipped"), !bird, "{err}");
}
