//! Sockets: the UDP workers and the TCP listener that feed requests to `handler.rs`.
//!
//! **UDP**: for every listen address, `udp_workers` sockets bound with `SO_REUSEPORT` (the
//! kernel spreads datagrams across them), each served by its own OS thread in a blocking
//! loop: `recvmmsg` a batch, answer each from the current table (one atomic load per batch),
//! `sendmmsg` the replies, with replies of equal size to the same client joined into one UDP
//! GSO send (`UDP_SEGMENT`; the kernel splits it, saving a trip through the IP stack per
//! reply; without kernel support it falls back to one datagram per reply). Each response passes
//! the response rate limiter (`rrl.rs`: one atomic compare-and-swap) when it is on. No async
//! runtime, locks or allocation on this path.
//!
//! **TCP** (RFC 7766): a tokio task per connection, 2-byte length framing, several queries per
//! connection answered in order, an idle timeout, a write timeout (a client that does not read
//! its replies is dropped), a cap on open connections per client address, a cap on open
//! connections in all (when it is reached, a new connection closes the least recently active
//! one, so no client can keep the others out), one query per scheduler turn (a client
//! pipelining thousands of queries waits its turn like everyone else), and zone transfers sent
//! as a series of messages.
//!
//! Bind errors are returned to the caller, who treats them as fatal at start-up. This module
//! decides nothing about answers; it never touches the table except to read it.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::handler::{Reply, Transport, handle};
use super::rrl::{self, Rrl, Verdict};
use super::table::Table;

/// How often a blocked UDP worker wakes to check for shutdown.
const UDP_POLL: Duration = Duration::from_millis(200);
/// Datagrams handled per `recvmmsg` call.
const BATCH: usize = 32;
/// Receive buffer per datagram: the largest request we accept over UDP.
const MAX_UDP_REQUEST: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen for DNS on {addr} ({proto}): {source}")]
    Bind { addr: SocketAddr, proto: &'static str, source: io::Error },
}

/// The sockets of a running server, bound but not yet served.
pub struct Bound {
    pub udp: Vec<(SocketAddr, Vec<UdpSocket>)>,
    pub tcp: Vec<std::net::TcpListener>,
    /// The addresses actually bound (port 0 resolved), one per listen address.
    pub local: Vec<SocketAddr>,
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // Room for bursts; the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(UDP_POLL))?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Bind UDP (`workers` sockets) and TCP on every address. Port 0 picks a free port, the same
/// for UDP and TCP.
pub fn bind(listen: &[SocketAddr], workers: usize) -> Result<Bound, BindError> {
    let mut bound = Bound { udp: Vec::new(), tcp: Vec::new(), local: Vec::new() };
    for &addr in listen {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let first = udp_socket(addr).map_err(|source| BindError::Bind { addr, proto: "udp", source })?;
            let local = first.local_addr().map_err(|source| BindError::Bind { addr, proto: "udp", source })?;
            let tcp = match tcp_listener(local) {
                Ok(t) => t,
                // With port 0 the UDP port may be taken for TCP: try another.
                Err(_) if addr.port() == 0 && attempt < 20 => continue,
                Err(source) => return Err(BindError::Bind { addr: local, proto: "tcp", source }),
            };
            let mut socks = vec![first];
            for _ in 1..workers.max(1) {
                socks.push(udp_socket(local).map_err(|source| BindError::Bind { addr: local, proto: "udp", source })?);
            }
            bound.udp.push((local, socks));
            bound.tcp.push(tcp);
            bound.local.push(local);
            break;
        }
    }
    Ok(bound)
}

/// Serve UDP on `socks`, one thread each, until `stop` is set. With `rrl`, every response
/// passes the rate limiter first (see `rrl.rs`).
pub fn spawn_udp(socks: Vec<UdpSocket>, table: Arc<ArcSwap<Table>>, rrl: Option<Arc<Rrl>>, stop: Arc<AtomicBool>) -> io::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    for (i, sock) in socks.into_iter().enumerate() {
        let table = table.clone();
        let stop = stop.clone();
        let rrl = rrl.clone();
        let name = format!("dns-udp-{i}");
        threads.push(std::thread::Builder::new().name(name).spawn(move || udp_worker(sock, &table, rrl.as_deref(), &stop))?);
    }
    Ok(threads)
}

#[cfg(target_os = "linux")]
fn udp_worker(sock: UdpSocket, table: &ArcSwap<Table>, rrl: Option<&Rrl>, stop: &AtomicBool) {
    mmsg::run(sock, table, rrl, stop);
}

#[cfg(not(target_os = "linux"))]
fn udp_worker(sock: UdpSocket, table: &ArcSwap<Table>, rrl: Option<&Rrl>, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_UDP_REQUEST];
    let mut out = Vec::with_capacity(4096);
    let mut slipped = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let t = table.load();
                if let Reply::Message = handle(&t, &buf[..n], Transport::Udp, peer.ip(), &mut out) {
                    match rrl.map_or(Verdict::Send, |r| r.verdict(peer.ip(), &out, r.now_secs(), &mut slipped)) {
                        Verdict::Drop => continue,
                        Verdict::Slip => rrl::slip(&mut out),
                        Verdict::Send => {}
                    }
                    let _ = sock.send_to(&out, peer);
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                tracing::warn!(error = %e, "dns: udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Batched UDP I/O with `recvmmsg`/`sendmmsg` (Linux): one system call per batch each way.
#[cfg(target_os = "linux")]
mod mmsg {
    use super::*;
    use std::os::fd::AsRawFd;

    fn peer_of(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
        match ss.ss_family as i32 {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in here (family AF_INET).
                let sin = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
                Some(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 here (family AF_INET6).
                let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }

    pub(super) fn run(sock: UdpSocket, table: &ArcSwap<Table>, rrl: Option<&Rrl>, stop: &AtomicBool) {
        let mut slipped = 0u32;
        let fd = sock.as_raw_fd();
        let mut bufs = vec![[0u8; MAX_UDP_REQUEST]; BATCH];
        let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(GSO_MAX * 512)).collect();
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut iov_in: Vec<libc::iovec> = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        let mut iov_out: Vec<libc::iovec> = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        // SAFETY: as above.
        let mut msgs_in: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut msgs_out: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut reply = Vec::with_capacity(4096);
        let mut groups = [Group::default(); BATCH];
        // SAFETY: CMSG_SPACE is arithmetic on its argument.
        let cmsg_space = unsafe { libc::CMSG_SPACE(2) } as usize;
        let mut cmsgs: Vec<Vec<u64>> = (0..BATCH).map(|_| vec![0u64; cmsg_space.div_ceil(8)]).collect();
        let mut gso = true;
        while !stop.load(Ordering::Relaxed) {
            for i in 0..BATCH {
                iov_in[i] = libc::iovec { iov_base: bufs[i].as_mut_ptr().cast(), iov_len: MAX_UDP_REQUEST };
                msgs_in[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                msgs_in[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                msgs_in[i].msg_hdr.msg_iov = &mut iov_in[i];
                msgs_in[i].msg_hdr.msg_iovlen = 1;
                msgs_in[i].msg_hdr.msg_control = std::ptr::null_mut();
                msgs_in[i].msg_hdr.msg_controllen = 0;
                msgs_in[i].msg_hdr.msg_flags = 0;
                msgs_in[i].msg_len = 0;
            }
            // SAFETY: every mmsghdr points at live buffers owned by this function; the socket
            // has a receive timeout, so the call returns at least every UDP_POLL.
            let n = unsafe { libc::recvmmsg(fd, msgs_in.as_mut_ptr(), BATCH as u32, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) {
                    tracing::warn!(error = %e, "dns: udp receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let n = n as usize;
            let t = table.load();
            let now = rrl.map_or(0, Rrl::now_secs);
            // Answer, grouping replies of equal size to the same client into one UDP GSO
            // send (one trip through the IP stack for the group; the kernel splits it).
            let mut m = 0;
            for i in 0..n {
                let len = (msgs_in[i].msg_len as usize).min(MAX_UDP_REQUEST);
                let Some(peer) = peer_of(&addrs[i]) else { continue };
                if handle(&t, &bufs[i][..len], Transport::Udp, peer, &mut reply) != Reply::Message {
                    continue;
                }
                if let Some(r) = rrl {
                    match r.verdict(peer, &reply, now, &mut slipped) {
                        Verdict::Send => {}
                        Verdict::Slip => rrl::slip(&mut reply),
                        Verdict::Drop => continue,
                    }
                }
                let namelen = msgs_in[i].msg_hdr.msg_namelen as usize;
                let key = addr_bytes(&addrs[i], namelen);
                let tag = i_addr(&addrs, i);
                let fits = |g: &Group| g.seg == reply.len() && g.count < GSO_MAX && (g.count + 1) * g.seg <= GSO_BYTES;
                let joined = if gso {
                    (0..m).find(|&g| fits(&groups[g]) && groups[g].addr == tag && key == addr_bytes(&addrs[groups[g].addr_of], groups[g].namelen))
                } else {
                    None
                };
                match joined {
                    Some(g) => {
                        outs[g].extend_from_slice(&reply);
                        groups[g].count += 1;
                    }
                    None => {
                        outs[m].clear();
                        outs[m].extend_from_slice(&reply);
                        groups[m] = Group { addr_of: i, namelen, seg: reply.len(), count: 1, addr: tag };
                        m += 1;
                    }
                }
            }
            drop(t);
            for g in 0..m {
                let grp = &groups[g];
                iov_out[g] = libc::iovec { iov_base: outs[g].as_mut_ptr().cast(), iov_len: outs[g].len() };
                let h = &mut msgs_out[g].msg_hdr;
                h.msg_name = (&mut addrs[grp.addr_of] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = grp.namelen as u32;
                h.msg_iov = &mut iov_out[g];
                h.msg_iovlen = 1;
                h.msg_flags = 0;
                if grp.count > 1 {
                    let c = &mut cmsgs[g];
                    h.msg_control = c.as_mut_ptr().cast();
                    h.msg_controllen = cmsg_space;
                    // SAFETY: `c` is an aligned buffer of cmsg_space bytes; CMSG_FIRSTHDR
                    // returns its start, which has room for one header and a u16.
                    unsafe {
                        let hdr = libc::CMSG_FIRSTHDR(h);
                        (*hdr).cmsg_level = libc::SOL_UDP;
                        (*hdr).cmsg_type = UDP_SEGMENT;
                        (*hdr).cmsg_len = libc::CMSG_LEN(2) as _;
                        std::ptr::write_unaligned(libc::CMSG_DATA(hdr).cast::<u16>(), grp.seg as u16);
                    }
                } else {
                    h.msg_control = std::ptr::null_mut();
                    h.msg_controllen = 0;
                }
            }
            let mut sent = 0;
            while sent < m {
                // SAFETY: msgs_out[sent..m] point at live buffers filled above.
                let r = unsafe { libc::sendmmsg(fd, msgs_out[sent..].as_mut_ptr(), (m - sent) as u32, 0) };
                if r > 0 {
                    sent += r as usize;
                    continue;
                }
                if groups[sent].count > 1 {
                    // No UDP GSO here (old kernel, odd device): send this group's replies one
                    // by one and stop grouping.
                    gso = false;
                    let seg = groups[sent].seg;
                    let to = groups[sent].addr_of;
                    for chunk in outs[sent].chunks(seg) {
                        // SAFETY: a plain sendto with a live buffer and the kernel-filled address.
                        unsafe {
                            libc::sendto(fd, chunk.as_ptr().cast(), chunk.len(), 0, (&addrs[to] as *const libc::sockaddr_storage).cast(), groups[sent].namelen as u32);
                        }
                    }
                }
                // A failed datagram (e.g. ICMP unreachable reported late): skip it.
                sent += 1;
            }
        }
    }

    /// Replies per GSO send (the kernel's limit is 64 segments).
    const GSO_MAX: usize = 64;
    /// And at most this many bytes (one IP datagram's worth).
    const GSO_BYTES: usize = 65_000;
    const UDP_SEGMENT: libc::c_int = 103;

    #[derive(Clone, Copy, Default)]
    struct Group {
        /// Index of the request whose address the group answers.
        addr_of: usize,
        namelen: usize,
        seg: usize,
        count: usize,
        /// Family and port, to skip most address comparisons.
        addr: u32,
    }

    fn i_addr(addrs: &[libc::sockaddr_storage], i: usize) -> u32 {
        let a = &addrs[i];
        // SAFETY: reading the family and the port field, present in every sockaddr_in(6).
        let port = unsafe { (*(a as *const libc::sockaddr_storage as *const libc::sockaddr_in)).sin_port };
        (a.ss_family as u32) << 16 | port as u32
    }

    fn addr_bytes(a: &libc::sockaddr_storage, len: usize) -> &[u8] {
        // SAFETY: sockaddr_storage is plain bytes; len is at most its size (the kernel set it).
        unsafe { std::slice::from_raw_parts((a as *const libc::sockaddr_storage).cast::<u8>(), len.min(std::mem::size_of::<libc::sockaddr_storage>())) }
    }
}

/// TCP settings.
#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    /// How long a connection may wait for the next query.
    pub idle_timeout: Duration,
    /// How long one reply may take to be written; a client that does not read is dropped.
    pub write_timeout: Duration,
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_per_client: usize,
}

/// Who a connection counts against for the per-client cap: the IPv4 address, or the IPv6 /64
/// (one host usually holds a whole /64, so counting single IPv6 addresses would cap nothing).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => {
            let mut o = a.octets();
            o[8..].fill(0);
            IpAddr::from(o)
        }
    }
}

/// One open connection, as the accept loop sees it.
struct Slot {
    id: u64,
    /// The client, as counted for the per-client cap (see `client_key`).
    peer: IpAddr,
    /// Milliseconds since the loop started when the connection last made progress (accepted,
    /// a query read, a reply written).
    active: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// The open connections of one listener. Owned by the accept loop alone (no lock): connection
/// tasks only store their progress time into their slot's atomic.
#[derive(Default)]
struct Slots {
    open: Vec<Slot>,
    per_client: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Yes,
    /// Over the per-client cap: close it at once.
    ClientFull,
    /// Every slot is taken: close the one that made progress least recently, then admit.
    Evict(usize),
}

impl Slots {
    fn admit(&self, peer: IpAddr, opts: &TcpOptions) -> Admit {
        if self.per_client.get(&peer).copied().unwrap_or(0) >= opts.max_per_client {
            return Admit::ClientFull;
        }
        if self.open.len() < opts.max_connections {
            return Admit::Yes;
        }
        match self.open.iter().enumerate().min_by_key(|(_, s)| s.active.load(Ordering::Relaxed)) {
            Some((i, _)) => Admit::Evict(i),
            None => Admit::ClientFull,
        }
    }

    fn insert(&mut self, peer: IpAddr, now_ms: u64) -> (u64, Arc<AtomicU64>, CancellationToken) {
        self.next_id += 1;
        let active = Arc::new(AtomicU64::new(now_ms));
        let stop = CancellationToken::new();
        self.open.push(Slot { id: self.next_id, peer, active: active.clone(), stop: stop.clone() });
        *self.per_client.entry(peer).or_insert(0) += 1;
        (self.next_id, active, stop)
    }

    /// Forget a connection (it ended, or it is being evicted).
    fn remove_at(&mut self, i: usize) -> Slot {
        let slot = self.open.swap_remove(i);
        if let Some(n) = self.per_client.get_mut(&slot.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&slot.peer);
            }
        }
        slot
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.open.iter().position(|s| s.id == id) {
            self.remove_at(i);
        }
    }
}

/// Serve TCP on `listener` until `cancel` fires. Must run inside a tokio runtime.
///
/// Fairness: a client address holds at most `max_per_client` connections (more are closed at
/// once); when every slot is taken, a new connection closes the one that made progress least
/// recently (the oldest idle, or one stuck writing to a client that does not read), so no
/// client, or set of clients, keeps everyone else out. A reply that cannot be written within
/// `write_timeout` closes its connection.
pub async fn serve_tcp(listener: std::net::TcpListener, table: Arc<ArcSwap<Table>>, opts: TcpOptions, cancel: CancellationToken) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "dns: cannot register the TCP listener");
            return;
        }
    };
    let base = Instant::now();
    let now_ms = move || base.elapsed().as_millis() as u64;
    let mut slots = Slots::default();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Ok(id) = done {
                    slots.remove(id);
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "dns: tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let ip = peer.ip();
                let client = client_key(ip);
                match slots.admit(client, &opts) {
                    Admit::Yes => {}
                    Admit::ClientFull => {
                        drop(stream); // over this client's cap: close at once
                        continue;
                    }
                    Admit::Evict(i) => {
                        let old = slots.remove_at(i);
                        tracing::debug!(evicted = %old.peer, new = %ip, "dns: tcp slots full, closing the least recently active connection");
                        old.stop.cancel();
                    }
                }
                let (id, active, stop) = slots.insert(client, now_ms());
                let table = table.clone();
                let cancel = cancel.clone();
                conns.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = stop.cancelled() => {}
                        _ = tcp_connection(stream, ip, &table, &opts, &active, now_ms) => {}
                    }
                    id
                });
            }
        }
    }
    conns.shutdown().await;
}

async fn tcp_connection(stream: tokio::net::TcpStream, peer: IpAddr, table: &ArcSwap<Table>, opts: &TcpOptions, active: &AtomicU64, now_ms: impl Fn() -> u64) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    // Buffered reads: pipelined queries come out of one read (writes pass straight through).
    let mut stream = tokio::io::BufReader::with_capacity(4096, stream);
    let idle = opts.idle_timeout;
    let mut req = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(1024);
    let mut body = Vec::with_capacity(1024);
    loop {
        let len = match tokio::time::timeout(idle, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            // Idle too long, closed by the client, or a broken connection: done.
            _ => return Ok(()),
        };
        req.resize(len, 0);
        match tokio::time::timeout(idle, stream.read_exact(&mut req)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        active.store(now_ms(), Ordering::Relaxed);
        let reply = {
            let t = table.load();
            handle(&t, &req, Transport::Tcp, peer, &mut body)
        };
        match reply {
            Reply::Drop => {}
            Reply::Message => {
                out.clear();
                out.extend_from_slice(&(body.len() as u16).to_be_bytes());
                out.extend_from_slice(&body);
                write_within(&mut stream, &out, opts.write_timeout).await?;
            }
            Reply::Transfer(msgs) => {
                for m in msgs {
                    out.clear();
                    out.extend_from_slice(&(m.len() as u16).to_be_bytes());
                    out.extend_from_slice(&m);
                    write_within(&mut stream, &out, opts.write_timeout).await?;
                    active.store(now_ms(), Ordering::Relaxed);
                }
            }
        }
        active.store(now_ms(), Ordering::Relaxed);
        // One query per turn: a client pipelining thousands of queries waits its turn like
        // everyone else instead of holding the runtime thread for a whole batch.
        tokio::task::yield_now().await;
    }
}

/// Write all of `buf`, or fail when the client has not taken it within `limit`.
async fn write_within(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>, buf: &[u8], limit: Duration) -> io::Result<()> {
    match tokio::time::timeout(limit, stream.write_all(buf)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client did not read the reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(max: usize, per_client: usize) -> TcpOptions {
        TcpOptions { idle_timeout: Duration::from_secs(10), write_timeout: Duration::from_secs(2), max_connections: max, max_per_client: per_client }
    }

    #[test]
    fn one_client_never_takes_every_slot() {
        let o = opts(4, 2);
        let mut s = Slots::default();
        let bad: IpAddr = "127.0.0.41".parse().unwrap();
        for t in 0..2 {
            assert_eq!(s.admit(bad, &o), Admit::Yes);
            s.insert(bad, t);
        }
        assert_eq!(s.admit(bad, &o), Admit::ClientFull);
        let good: IpAddr = "127.0.0.42".parse().unwrap();
        assert_eq!(s.admit(good, &o), Admit::Yes);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_active() {
        let o = opts(3, 3);
        let mut s = Slots::default();
        let ips: Vec<IpAddr> = (1..=3).map(|i| IpAddr::from([127, 0, 0, i])).collect();
        let mut actives = Vec::new();
        for (t, ip) in ips.iter().enumerate() {
            actives.push(s.insert(*ip, t as u64).1);
        }
        // The first connection made progress later than the others: the second is the oldest.
        actives[0].store(10, Ordering::Relaxed);
        let new: IpAddr = "127.0.0.9".parse().unwrap();
        let Admit::Evict(i) = s.admit(new, &o) else { panic!("expected an eviction") };
        let old = s.remove_at(i);
        assert_eq!(old.peer, ips[1]);
        s.insert(new, 11);
        assert_eq!(s.open.len(), 3);
        assert_eq!(s.per_client.get(&ips[1]), None);
        // IPv6 clients count per /64.
        assert_eq!(client_key("2001:db8:1:2:aaaa::1".parse().unwrap()), client_key("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_ne!(client_key("2001:db8:1:2::1".parse().unwrap()), client_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(client_key(ips[0]), ips[0]);
        // A finished connection frees its slot and its client's count.
        let id = s.open.iter().find(|x| x.peer == ips[0]).unwrap().id;
        s.remove(id);
        assert_eq!(s.admit(ips[0], &o), Admit::Yes);
    }
}
