//! Sockets: the UDP workers and the TCP listener that feed requests to `handler.rs`.
//!
//! **UDP**: for every listen address, `udp_workers` sockets bound with `SO_REUSEPORT` (the
//! kernel spreads datagrams across them), each served by its own OS thread in a blocking
//! loop: `recvmmsg` a batch, answer each from the current table (one atomic load per batch),
//! `sendmmsg` the replies. No async runtime, locks or allocation on this path.
//!
//! **TCP** (RFC 7766): a tokio task per connection, 2-byte length framing, several queries per
//! connection answered in order, an idle timeout, a cap on open connections (beyond it new
//! connections are closed at once), and zone transfers sent as a series of messages.
//!
//! Bind errors are returned to the caller, who treats them as fatal at start-up. This module
//! decides nothing about answers; it never touches the table except to read it.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::handler::{Reply, Transport, handle};
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

/// Serve UDP on `socks`, one thread each, until `stop` is set.
pub fn spawn_udp(socks: Vec<UdpSocket>, table: Arc<ArcSwap<Table>>, stop: Arc<AtomicBool>) -> io::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    for (i, sock) in socks.into_iter().enumerate() {
        let table = table.clone();
        let stop = stop.clone();
        let name = format!("dns-udp-{i}");
        threads.push(std::thread::Builder::new().name(name).spawn(move || udp_worker(sock, &table, &stop))?);
    }
    Ok(threads)
}

#[cfg(target_os = "linux")]
fn udp_worker(sock: UdpSocket, table: &ArcSwap<Table>, stop: &AtomicBool) {
    mmsg::run(sock, table, stop);
}

#[cfg(not(target_os = "linux"))]
fn udp_worker(sock: UdpSocket, table: &ArcSwap<Table>, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_UDP_REQUEST];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let t = table.load();
                if let Reply::Message = handle(&t, &buf[..n], Transport::Udp, peer.ip(), &mut out) {
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

    pub(super) fn run(sock: UdpSocket, table: &ArcSwap<Table>, stop: &AtomicBool) {
        let fd = sock.as_raw_fd();
        let mut bufs = vec![[0u8; MAX_UDP_REQUEST]; BATCH];
        let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(1232)).collect();
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut addrs: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut iov_in: Vec<libc::iovec> = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        let mut iov_out: Vec<libc::iovec> = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; BATCH];
        // SAFETY: as above.
        let mut msgs_in: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
        let mut msgs_out: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
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
            let mut m = 0;
            for i in 0..n {
                let len = (msgs_in[i].msg_len as usize).min(MAX_UDP_REQUEST);
                let Some(peer) = peer_of(&addrs[i]) else { continue };
                if handle(&t, &bufs[i][..len], Transport::Udp, peer, &mut outs[i]) != Reply::Message {
                    continue;
                }
                iov_out[m] = libc::iovec { iov_base: outs[i].as_mut_ptr().cast(), iov_len: outs[i].len() };
                msgs_out[m].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                msgs_out[m].msg_hdr.msg_namelen = msgs_in[i].msg_hdr.msg_namelen;
                msgs_out[m].msg_hdr.msg_iov = &mut iov_out[m];
                msgs_out[m].msg_hdr.msg_iovlen = 1;
                msgs_out[m].msg_hdr.msg_control = std::ptr::null_mut();
                msgs_out[m].msg_hdr.msg_controllen = 0;
                msgs_out[m].msg_hdr.msg_flags = 0;
                m += 1;
            }
            drop(t);
            let mut sent = 0;
            while sent < m {
                // SAFETY: msgs_out[sent..m] point at live buffers filled above.
                let r = unsafe { libc::sendmmsg(fd, msgs_out[sent..].as_mut_ptr(), (m - sent) as u32, 0) };
                if r <= 0 {
                    // A failed datagram (e.g. ICMP unreachable reported late): skip it.
                    sent += 1;
                } else {
                    sent += r as usize;
                }
            }
        }
    }
}

/// TCP settings.
#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serve TCP on `listener` until `cancel` fires. Must run inside a tokio runtime.
pub async fn serve_tcp(listener: std::net::TcpListener, table: Arc<ArcSwap<Table>>, opts: TcpOptions, cancel: CancellationToken) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "dns: cannot register the TCP listener");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "dns: tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    drop(stream); // over the connection cap: close at once
                    continue;
                };
                let table = table.clone();
                let cancel = cancel.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tcp_connection(stream, peer.ip(), &table, opts.idle_timeout) => {}
                    }
                });
            }
        }
    }
    conns.shutdown().await;
}

async fn tcp_connection(mut stream: tokio::net::TcpStream, peer: IpAddr, table: &ArcSwap<Table>, idle: Duration) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut req = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(1024);
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
        let reply = {
            let t = table.load();
            out.clear();
            out.extend_from_slice(&[0, 0]);
            let mut body = Vec::new();
            let r = handle(&t, &req, Transport::Tcp, peer, &mut body);
            out.extend_from_slice(&body);
            r
        };
        match reply {
            Reply::Drop => {}
            Reply::Message => {
                let n = (out.len() - 2) as u16;
                out[..2].copy_from_slice(&n.to_be_bytes());
                stream.write_all(&out).await?;
            }
            Reply::Transfer(msgs) => {
                for m in msgs {
                    let mut framed = Vec::with_capacity(m.len() + 2);
                    framed.extend_from_slice(&(m.len() as u16).to_be_bytes());
                    framed.extend_from_slice(&m);
                    stream.write_all(&framed).await?;
                }
            }
        }
    }
}
