//! `accept_mode = false` (RFC 5798 6.4.3): a node that is not the address owner does not accept
//! packets addressed to the virtual addresses, even while it is master and holds them.
//!
//! The mechanism is an nftables table of the instance's own (`inet understudy_vip_<ifindex>_<vrid>_<4|6>`)
//! with one input-hook chain that drops what arrives on the VRRP interface for the virtual
//! addresses. It is installed when the speaker starts and deleted when it stops; a table left by a
//! killed speaker is replaced (or, with `accept_mode = true` now, deleted) by the next start. The
//! rules stay for the speaker's whole life: a backup does not hold the addresses, so they only
//! matter on a master, and nothing has to change at the instant of a transition.
//!
//! What still gets through, as the RFC requires: ARP (not IP: the kernel answers it for the
//! addresses the master holds), IPv6 neighbour solicitations and advertisements (the RFC's note:
//! they MUST NOT be dropped), the advertisements themselves (to the group or the peers, never to a
//! virtual address) and everything the node sends to itself (only the VRRP interface is matched).
//!
//! The address owner (priority 255) always accepts: no table is installed for it. The table is
//! written by `nft -f -` (the nftables command line, one atomic batch); it decides nothing and
//! touches no table but its own.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use super::config::VipAddr;

/// The instance's table name: unique per interface, VRID and family, as instances are.
pub fn table_name(ifindex: u32, vrid: u8, v6: bool) -> String {
    format!("understudy_vip_{ifindex}_{vrid}_{}", if v6 { 6 } else { 4 })
}

/// The nft script that (re)creates the table dropping `addrs` arriving on the interface with
/// index `ifindex` (by index: no interface name is ever written into the script). Starting
/// with "create if missing, then delete" makes the batch replace a leftover table atomically.
pub fn install_script(table: &str, ifindex: u32, addrs: &[VipAddr]) -> String {
    let v6 = addrs.first().is_some_and(|a| a.ip.is_ipv6());
    let set = addrs.iter().map(|a| a.ip.to_string()).collect::<Vec<_>>().join(", ");
    let (fam, nd) = if v6 {
        ("ip6", format!("        iif {ifindex} ip6 daddr {{ {set} }} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n"))
    } else {
        ("ip", String::new())
    };
    format!(
        "table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n    chain input {{\n        type filter hook input priority -10; policy accept;\n{nd}        \
         iif {ifindex} {fam} daddr {{ {set} }} counter drop\n    }}\n}}\n"
    )
}

/// The nft script that deletes the table if it is there.
pub fn remove_script(table: &str) -> String {
    format!("table inet {table}\ndelete table inet {table}\n")
}

fn nft(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running nft (the nftables command line, needed for accept_mode = false): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("nft failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())))
    }
}

/// The installed filter of one instance; [`NoAccept::remove`] deletes it.
#[derive(Debug)]
pub struct NoAccept {
    table: String,
}

impl NoAccept {
    /// Install the filter (replacing a leftover of an earlier run).
    pub fn install(ifindex: u32, vrid: u8, addrs: &[VipAddr]) -> io::Result<NoAccept> {
        let v6 = addrs.first().is_some_and(|a| a.ip.is_ipv6());
        let table = table_name(ifindex, vrid, v6);
        nft(&install_script(&table, ifindex, addrs))?;
        Ok(NoAccept { table })
    }

    /// Delete a table an earlier run left (it was killed), when this run accepts.
    pub fn remove_leftover(ifindex: u32, vrid: u8, v6: bool) -> io::Result<()> {
        nft(&remove_script(&table_name(ifindex, vrid, v6)))
    }

    pub fn remove(self) -> io::Result<()> {
        nft(&remove_script(&self.table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str, prefix: u8) -> VipAddr {
        VipAddr { ip: s.parse().unwrap(), prefix }
    }

    #[test]
    fn the_ipv4_table_drops_the_vips_on_the_interface_only() {
        let t = table_name(7, 51, false);
        assert_eq!(t, "understudy_vip_7_51_4");
        let s = install_script(&t, 7, &[addr("198.18.0.100", 24), addr("198.18.0.101", 24)]);
        assert!(s.starts_with("table inet understudy_vip_7_51_4\ndelete table inet understudy_vip_7_51_4\n"), "{s}");
        assert!(s.contains("iif 7 ip daddr { 198.18.0.100, 198.18.0.101 } counter drop"), "{s}");
        assert!(!s.contains("icmpv6"), "{s}");
    }

    #[test]
    fn the_ipv6_table_lets_neighbour_discovery_through() {
        let t = table_name(3, 9, true);
        let s = install_script(&t, 3, &[addr("2001:db8::100", 64)]);
        let nd = s.find("icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept").expect(&s);
        let drop = s.find("iif 3 ip6 daddr { 2001:db8::100 } counter drop").expect(&s);
        assert!(nd < drop, "neighbour discovery is accepted before the drop: {s}");
        assert_eq!(remove_script(&t), "table inet understudy_vip_3_9_6\ndelete table inet understudy_vip_3_9_6\n");
    }
}
