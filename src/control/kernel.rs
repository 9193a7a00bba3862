//! The kernel side of a port's exception path: the Linux interface DPDK's
//! `net_tap` (or `virtio_user`) device made takes the port's identity — its
//! MAC, MTU and addresses — so the kernel's own traffic (BGP, SSH, health
//! checks) leaves and arrives as the port's. Set with iproute2 (`ip`), once
//! at start, on the management core.

use std::net::IpAddr;
use std::process::Command;

use crate::control::config::PortSection;
use crate::net::ethernet::fmt_mac;

#[derive(Debug, thiserror::Error)]
#[error("kernel interface `{iface}`: `ip {args}` failed: {why}")]
pub struct KernelError {
    pub iface: String,
    pub args: String,
    pub why: String,
}

/// The `ip` commands (arguments) that give interface `iface` the identity of
/// port `p`: MAC `mac`, MTU `mtu`, its addresses (IPv6 without duplicate
/// address detection: the address is the port's, answered by l4lb on the
/// wire), then up.
pub fn identity_commands(iface: &str, p: &PortSection, mac: [u8; 6], mtu: u16) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let mut cmds =
        vec![s(&["link", "set", "dev", iface, "address", &fmt_mac(&mac), "mtu", &mtu.to_string()])];
    if let Some(a) = p.ipv4 {
        cmds.push(s(&["-4", "addr", "replace", &format!("{}/{}", a.addr, a.prefix_len), "dev", iface]));
    }
    if let Some(a) = p.ipv6 {
        cmds.push(s(&[
            "-6",
            "addr",
            "replace",
            &format!("{}/{}", a.addr, a.prefix_len),
            "dev",
            iface,
            "nodad",
        ]));
    }
    cmds.push(s(&["link", "set", "dev", iface, "up"]));
    cmds
}

/// Runs [`identity_commands`].
pub fn take_identity(iface: &str, p: &PortSection, mac: [u8; 6], mtu: u16) -> Result<(), KernelError> {
    for args in identity_commands(iface, p, mac, mtu) {
        let fail = |why: String| KernelError { iface: iface.to_owned(), args: args.join(" "), why };
        let out = Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| fail(format!("{e} (is iproute2 installed?)")))?;
        if !out.status.success() {
            return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
    }
    Ok(())
}

/// The addresses a kernel interface gets (for logs).
pub fn addresses(p: &PortSection) -> Vec<IpAddr> {
    p.ipv4.map(|a| IpAddr::V4(a.addr)).into_iter().chain(p.ipv6.map(|a| IpAddr::V6(a.addr))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::config::Config;

    #[test]
    fn the_interface_gets_the_ports_mac_mtu_and_addresses_then_comes_up() {
        let cfg = Config::parse(
            r#"
[dpdk]
lcores = "0,1"
devices = ["net_null0"]
[[ports]]
name = "lan"
device = "net_null0"
ipv4 = "198.18.0.1/24"
ipv6 = "2001:db8::1/64"
"#,
            "t.toml",
        )
        .unwrap();
        let cmds: Vec<String> = identity_commands("lan", &cfg.ports[0], [2, 0, 0, 0, 1, 1], 1500)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            cmds,
            [
                "link set dev lan address 02:00:00:00:01:01 mtu 1500",
                "-4 addr replace 198.18.0.1/24 dev lan",
                "-6 addr replace 2001:db8::1/64 dev lan nodad",
                "link set dev lan up",
            ]
        );
        assert_eq!(addresses(&cfg.ports[0]).len(), 2);
    }
}
