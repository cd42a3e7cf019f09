//! The speaker's I/O: the VRRP raw socket, virtual addresses through rtnetlink, and
//! gratuitous ARP / unsolicited neighbour advertisements.
//!
//! - [`VrrpSocket`]: a raw IP socket for protocol 112 bound to the interface, TTL / hop limit
//!   255 on everything it sends, joined to 224.0.0.18 or ff02::12 (or sending to unicast
//!   peers). Received packets come back with their source, destination and TTL / hop limit so
//!   [`super::packet::parse`] can check them; nothing here judges a packet.
//! - [`add_address`] / [`del_address`]: `RTM_NEWADDR` / `RTM_DELADDR` on a `NETLINK_ROUTE`
//!   socket, written by hand (one request and its acknowledgement; no async netlink stack for
//!   two message types). Addresses are added with a finite valid and preferred lifetime
//!   (`IFA_CACHEINFO`) that the running speaker refreshes; if the speaker dies without
//!   resigning, the kernel removes the address by itself when the lifetime runs out.
//! - [`Announcer`]: gratuitous ARP requests through an `AF_PACKET` socket (IPv4), unsolicited
//!   neighbour advertisements with the override flag through a raw ICMPv6 socket (IPv6).
//!
//! The virtual router uses the interface's own MAC address (like keepalived without
//! `use_vmac`): clients learn the new master's MAC from the announcements.
//!
//! Needs CAP_NET_RAW and CAP_NET_ADMIN. It decides nothing: `mod.rs` calls it for the
//! machine's actions.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::config::VipAddr;
use super::packet::{PROTO, TTL};

pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// The interface a VRRP instance runs on.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// This node's own address on the link: its primary IPv4 address, or its IPv6 link-local
    /// address. The source of every advertisement and the tie-breaker between equal priorities.
    pub local: IpAddr,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

impl Link {
    /// Look up `name`; `v6` picks the family of the local address.
    pub fn lookup(name: &str, v6: bool) -> io::Result<Link> {
        let cname = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with a NUL byte"))?;
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface named {name}")));
        }
        let mac = hwaddr(name)?;
        let local = local_address(name, v6)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                if v6 { format!("{name} has no IPv6 link-local address") } else { format!("{name} has no IPv4 address to send advertisements from") },
            )
        })?;
        Ok(Link { name: name.to_string(), index, mac, local })
    }
}

fn hwaddr(name: &str) -> io::Result<[u8; 6]> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: ifreq is plain data; the name fits (config limits it to 15 bytes).
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of the ifreq we own.
    cvt(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: the union member the ioctl wrote.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// The first IPv4 address of `name`, or its IPv6 link-local address. Addresses the speaker
/// itself added carry a finite lifetime; they are not "primary" but come later in the list
/// the kernel returns, after the interface's own.
fn local_address(name: &str, v6: bool) -> io::Result<Option<IpAddr>> {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    cvt(unsafe { libc::getifaddrs(&mut ifap) })?;
    let mut found = None;
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a C string.
        let n = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if n.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: sa_family tells which sockaddr it is.
        let fam = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if !v6 && fam == libc::AF_INET {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            break;
        }
        if v6 && fam == libc::AF_INET6 {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            let a = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            if a.segments()[0] & 0xffc0 == 0xfe80 {
                found = Some(IpAddr::V6(a));
                break;
            }
        }
    }
    // SAFETY: the list from getifaddrs above.
    unsafe { libc::freeifaddrs(ifap) };
    Ok(found)
}

/// One received VRRP message with what the IP layer said about it.
#[derive(Debug)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    /// The VRRP message (IP header removed), or the whole packet when it was not even IPv4
    /// carrying VRRP (then `parse` of `split_ipv4` says why).
    pub msg: Vec<u8>,
    /// Set when the IPv4 header could not be split off.
    pub bad_ip: Option<super::packet::Malformed>,
}

pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    v6: bool,
    link: Link,
    /// Where adverts go: the group, or each unicast peer.
    dests: Vec<IpAddr>,
}

impl VrrpSocket {
    pub fn open(link: &Link, peers: &[IpAddr]) -> io::Result<VrrpSocket> {
        let v6 = link.local.is_ipv6();
        let sock = if v6 {
            Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(i32::from(PROTO))))?
        } else {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(i32::from(PROTO))))?
        };
        sock.bind_device(Some(link.name.as_bytes()))?;
        sock.set_nonblocking(true)?;
        if v6 {
            sock.set_multicast_hops_v6(u32::from(TTL))?;
            sock.set_unicast_hops_v6(u32::from(TTL))?;
            sock.set_multicast_loop_v6(false)?;
            sock.set_multicast_if_v6(link.index)?;
            let on: libc::c_int = 1;
            // SAFETY: setsockopt with an int option on our socket.
            unsafe {
                cvt(libc::setsockopt(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, (&on as *const libc::c_int).cast(), 4))?;
                cvt(libc::setsockopt(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, (&on as *const libc::c_int).cast(), 4))?;
            }
            if let IpAddr::V6(l) = link.local {
                sock.bind(&SocketAddr::V6(SocketAddrV6::new(l, 0, 0, link.index)).into())?;
            }
            if peers.is_empty() {
                sock.join_multicast_v6(&GROUP_V6, link.index)?;
            }
        } else {
            sock.set_multicast_ttl_v4(u32::from(TTL))?;
            sock.set_ttl_v4(u32::from(TTL))?;
            sock.set_multicast_loop_v4(false)?;
            sock.set_multicast_if_v4(&match link.local {
                IpAddr::V4(a) => a,
                _ => Ipv4Addr::UNSPECIFIED,
            })?;
            if peers.is_empty() {
                sock.join_multicast_v4_n(&GROUP_V4, &socket2::InterfaceIndexOrAddress::Index(link.index))?;
            }
            // Mark as network control (DSCP CS6), like routing protocols.
            sock.set_tos_v4(0xc0)?;
        }
        let dests = if peers.is_empty() { vec![if v6 { IpAddr::V6(GROUP_V6) } else { IpAddr::V4(GROUP_V4) }] } else { peers.to_vec() };
        // SAFETY: the socket2 Socket owns its descriptor, which stays open and the same for as
        // long as the AsyncFd owns the Socket.
        let fd = unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
        Ok(VrrpSocket { fd, v6, link: link.clone(), dests })
    }

    pub fn destinations(&self) -> &[IpAddr] {
        &self.dests
    }

    /// Send `msg` (built for `dst`) to `dst`.
    pub fn send_to(&self, msg: &[u8], dst: IpAddr) -> io::Result<()> {
        let addr: SocketAddr = match dst {
            IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, 0)),
            IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, 0, 0, if a.segments()[0] & 0xff00 == 0xff00 || a.segments()[0] & 0xffc0 == 0xfe80 { self.link.index } else { 0 })),
        };
        self.fd.get_ref().send_to(msg, &addr.into()).map(|_| ())
    }

    /// The next packet.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| if self.v6 { recv_v6(fd.get_ref()) } else { recv_v4(fd.get_ref()) }) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_v4(sock: &Socket) -> io::Result<Received> {
    let mut buf = vec![0u8; 2048];
    // SAFETY: reading into our buffer.
    let n = cvt(unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } as libc::c_int)? as usize;
    buf.truncate(n);
    match super::packet::split_ipv4(&buf) {
        Ok((src, dst, ttl, msg)) => Ok(Received { src: IpAddr::V4(src), dst: IpAddr::V4(dst), ttl, msg: msg.to_vec(), bad_ip: None }),
        Err(e) => Ok(Received { src: IpAddr::V4(Ipv4Addr::UNSPECIFIED), dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED), ttl: 0, msg: buf, bad_ip: Some(e) }),
    }
}

fn recv_v6(sock: &Socket) -> io::Result<Received> {
    let mut buf = vec![0u8; 4096];
    let mut ctrl = [0u64; 32];
    // SAFETY: plain data.
    let mut from: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: plain data.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctrl.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 32]>();
    // SAFETY: msg points at buffers that live through the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    let mut ttl = 0u8;
    let mut dst = Ipv6Addr::UNSPECIFIED;
    // SAFETY: walking the control messages the kernel wrote into ctrl.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                ttl = v.clamp(0, 255) as u8;
            } else if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                dst = Ipv6Addr::from(info.ipi6_addr.s6_addr);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let src = Ipv6Addr::from(from.sin6_addr.s6_addr);
    Ok(Received { src: IpAddr::V6(src), dst: IpAddr::V6(dst), ttl, msg: buf, bad_ip: None })
}

// ---------------------------------------------------------------------------------------------
// rtnetlink

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_CACHEINFO: u16 = 6;
const IFA_F_NODAD: u8 = 0x02;

fn nl_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// One request, one acknowledgement.
fn netlink(kind: u16, flags: u16, ifindex: u32, addr: VipAddr, lifetime: Option<Duration>) -> io::Result<()> {
    // SAFETY: a plain netlink socket we own.
    let fd = cvt(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) })?;
    // SAFETY: fd was just opened and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
    // SAFETY: a timeval for SO_RCVTIMEO on our socket.
    cvt(unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&tv as *const libc::timeval).cast(), size_of::<libc::timeval>() as u32) })?;

    let mut body = Vec::new();
    // struct ifaddrmsg
    body.push(if addr.ip.is_ipv6() { libc::AF_INET6 as u8 } else { libc::AF_INET as u8 });
    body.push(addr.prefix);
    body.push(if addr.ip.is_ipv6() { IFA_F_NODAD } else { 0 });
    body.push(0); // RT_SCOPE_UNIVERSE
    body.extend_from_slice(&ifindex.to_ne_bytes());
    nl_attr(&mut body, IFA_LOCAL, &ip_bytes(addr.ip));
    nl_attr(&mut body, IFA_ADDRESS, &ip_bytes(addr.ip));
    if let Some(l) = lifetime {
        let secs = l.as_secs().clamp(1, u64::from(u32::MAX - 1)) as u32;
        let mut ci = Vec::new();
        ci.extend_from_slice(&secs.to_ne_bytes()); // preferred
        ci.extend_from_slice(&secs.to_ne_bytes()); // valid
        ci.extend_from_slice(&[0; 8]);
        nl_attr(&mut body, IFA_CACHEINFO, &ci);
    }
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(flags | (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel fills it in
    msg.extend_from_slice(&body);
    // SAFETY: a zeroed sockaddr_nl is the kernel's address.
    let mut sa: libc::sockaddr_nl = unsafe { zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: sending our buffer to the kernel.
    cvt(unsafe {
        libc::sendto(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0, (&sa as *const libc::sockaddr_nl).cast(), size_of::<libc::sockaddr_nl>() as u32)
    } as libc::c_int)?;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into our buffer.
        let n = cvt(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) } as libc::c_int)? as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or([0; 4])) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if ty == libc::NLMSG_ERROR as u16 && off + 20 <= n {
                let errno = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or([0; 4]));
                return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) };
            }
            if len < 16 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

/// Add (or refresh the lifetime of) `addr` on the interface.
pub fn add_address(ifindex: u32, addr: VipAddr, lifetime: Duration) -> io::Result<()> {
    netlink(libc::RTM_NEWADDR, (libc::NLM_F_CREATE | libc::NLM_F_REPLACE) as u16, ifindex, addr, Some(lifetime))
}

/// Remove `addr`; one that is already gone is not an error.
pub fn del_address(ifindex: u32, addr: VipAddr) -> io::Result<()> {
    match netlink(libc::RTM_DELADDR, 0, ifindex, addr, None) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL) | Some(libc::ENOENT) | Some(libc::ESRCH)) => Ok(()),
        r => r,
    }
}

// ---------------------------------------------------------------------------------------------
// announcements

/// Sends announcements on one link. The sockets are opened once: creating and closing an
/// `AF_PACKET` socket waits for an RCU grace period in the kernel (about 20 ms here), which
/// would delay every takeover.
pub struct Announcer {
    link: Link,
    /// `AF_PACKET` socket for ARP (IPv4 instances).
    arp: Option<OwnedFd>,
    /// Raw ICMPv6 socket for neighbour advertisements (IPv6 instances).
    icmp6: Option<Socket>,
}

impl Announcer {
    pub fn open(link: &Link, v6: bool) -> io::Result<Announcer> {
        let (mut arp, mut icmp6) = (None, None);
        if v6 {
            let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
            sock.bind_device(Some(link.name.as_bytes()))?;
            sock.set_multicast_hops_v6(255)?;
            sock.set_unicast_hops_v6(255)?;
            sock.set_multicast_if_v6(link.index)?;
            // Never read from: keep nothing queued.
            sock.shutdown(std::net::Shutdown::Read).ok();
            icmp6 = Some(sock);
        } else {
            let proto = (libc::ETH_P_ARP as u16).to_be();
            // SAFETY: a packet socket we own.
            let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, i32::from(proto)) })?;
            // SAFETY: fd was just opened.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // Bound to the link, with the smallest receive buffer: it is never read, so the ARP
            // traffic it sees is dropped at once instead of queued.
            // SAFETY: plain data.
            let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = link.index as i32;
            let one: libc::c_int = 1;
            // SAFETY: binding and configuring our socket with plain data.
            unsafe {
                cvt(libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), size_of::<libc::sockaddr_ll>() as u32))?;
                cvt(libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, (&one as *const libc::c_int).cast(), 4))?;
            }
            arp = Some(fd);
        }
        Ok(Announcer { link: link.clone(), arp, icmp6 })
    }

    /// Tell the link that `addrs` are at this node's MAC now: one gratuitous ARP request per
    /// IPv4 address, one unsolicited neighbour advertisement (override flag) per IPv6 address.
    pub fn announce(&self, addrs: &[VipAddr]) -> io::Result<()> {
        for a in addrs {
            match (a.ip, &self.arp, &self.icmp6) {
                (IpAddr::V4(ip), Some(fd), _) => garp(fd, &self.link, ip)?,
                (IpAddr::V6(ip), _, Some(sock)) => unsolicited_na(sock, &self.link, ip)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The ARP payload of a gratuitous request for `ip` from `mac`.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut f = [0u8; 28];
    f[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[4] = 6;
    f[5] = 4;
    f[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    f[8..14].copy_from_slice(&mac);
    f[14..18].copy_from_slice(&ip.octets());
    // target hardware address stays zero
    f[24..28].copy_from_slice(&ip.octets());
    f
}

fn garp(fd: &OwnedFd, link: &Link, ip: Ipv4Addr) -> io::Result<()> {
    // SAFETY: plain data.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    sll.sll_ifindex = link.index as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let f = garp_frame(link.mac, ip);
    // SAFETY: sending our frame to the broadcast address of the link.
    cvt(unsafe { libc::sendto(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0, (&sll as *const libc::sockaddr_ll).cast(), size_of::<libc::sockaddr_ll>() as u32) }
        as libc::c_int)?;
    Ok(())
}

fn unsolicited_na(sock: &Socket, link: &Link, ip: Ipv6Addr) -> io::Result<()> {
    let all_nodes = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, link.index));
    // Type 136, code 0, checksum (the kernel fills it in for ICMPv6 raw sockets), flags
    // Override, the target, then the target link-layer address option.
    let mut m = vec![136u8, 0, 0, 0, 0x20, 0, 0, 0];
    m.extend_from_slice(&ip.octets());
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&link.mac);
    sock.send_to(&m, &all_nodes.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(&f[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!((&f[14..18], &f[18..24], &f[24..28]), (&[198u8, 18, 0, 100][..], &[0u8; 6][..], &[198u8, 18, 0, 100][..]));
    }

    #[test]
    fn netlink_attributes_are_padded_to_four_bytes() {
        let mut b = Vec::new();
        nl_attr(&mut b, IFA_LOCAL, &[1, 2, 3, 4, 5]);
        assert_eq!(b.len(), 12);
        assert_eq!((&b[..2], &b[2..4]), (&9u16.to_ne_bytes()[..], &IFA_LOCAL.to_ne_bytes()[..]));
        assert_eq!(&b[4..], &[1, 2, 3, 4, 5, 0, 0, 0]);
    }
}
