//! A network namespace joined to the host by a veth pair, for cutting a worker off from its
//! scheduler: the host side's link can be taken down and brought back. Removed on drop.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// A namespace `vns-<suffix>` with a veth pair on a private /30: the host end holds
/// `host_ip`, the namespace end `.2` of the same /30.
pub struct NetNs {
    pub name: String,
    pub host_if: String,
    pub host_ip: IpAddr,
}

impl NetNs {
    /// Creates the namespace and the link; `seed` picks the /30 (tests in parallel need
    /// different ones).
    pub fn create(suffix: &str, seed: u32) -> NetNs {
        super::require_ip_tool();
        // Interface names are limited to 15 bytes.
        let short: String = suffix.chars().rev().take(8).collect();
        let ns = NetNs {
            name: format!("vns-{suffix}"),
            host_if: format!("vh{short}"),
            host_ip: IpAddr::V4(Ipv4Addr::new(
                10,
                213,
                (seed >> 6 & 0xff) as u8,
                (seed & 0x3f) as u8 * 4 + 1,
            )),
        };
        let IpAddr::V4(host) = ns.host_ip else {
            unreachable!("built as IPv4")
        };
        let [a, b, c, d] = host.octets();
        let inner_ip = format!("{a}.{b}.{c}.{}/30", d + 1);
        let peer = format!("vw{short}");
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ip(&["-n", &ns.name, "addr", "add", &inner_ip, "dev", &peer]);
        ip(&["-n", &ns.name, "link", "set", &peer, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Sends everything the namespace does not reach on its own link to the host, so a
    /// process inside reaches every address the host holds (a scheduler listening on another
    /// namespace's host end, for one). The host needs no forwarding for that: those
    /// addresses are its own.
    pub fn route_via_host(&self) {
        ip(&[
            "-n",
            &self.name,
            "route",
            "add",
            "default",
            "via",
            &self.host_ip.to_string(),
        ]);
    }

    /// Takes the host side of the link down: nothing passes either way.
    pub fn link_down(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Brings the host side of the link back up.
    pub fn link_up(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the host end deletes the pair; deleting the namespace frees the rest.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
