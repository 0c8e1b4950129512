//! The destination a connection had before iptables REDIRECT sent it to this listener
//! (`SO_ORIGINAL_DST`, IPv4 and IPv6). Connections that were not redirected have none.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::net::TcpStream;

/// `SO_ORIGINAL_DST` and `IP6T_SO_ORIGINAL_DST` share the value 80.
const SO_ORIGINAL_DST: libc::c_int = 80;

pub fn get(stream: &TcpStream) -> Option<SocketAddr> {
    let fd = stream.as_raw_fd();
    let local = stream.local_addr().ok()?;
    let original = if local.is_ipv4() { v4(fd) } else { v6(fd) }?;
    // Without a NAT entry the kernel reports the local address itself: not an original destination.
    (original != local).then_some(original)
}

fn v4(fd: libc::c_int) -> Option<SocketAddr> {
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed sockaddr_in.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = libc::getsockopt(fd, libc::SOL_IP, SO_ORIGINAL_DST, &mut addr as *mut _ as *mut libc::c_void, &mut len);
        (r == 0).then(|| {
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(addr.sin_port)))
        })
    }
}

fn v6(fd: libc::c_int) -> Option<SocketAddr> {
    // SAFETY: as above, with sockaddr_in6.
    unsafe {
        let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let r =
            libc::getsockopt(fd, libc::SOL_IPV6, SO_ORIGINAL_DST, &mut addr as *mut _ as *mut libc::c_void, &mut len);
        (r == 0).then(|| {
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(addr.sin6_port), 0, 0))
        })
    }
}
