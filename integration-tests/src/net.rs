//! Addresses for servers under test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

/// An address on `ip` whose port was free a moment ago, for a child process to listen on
/// (a server started in the test process binds port 0 itself instead).
pub fn free_addr(ip: IpAddr) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind a port on {ip}: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("a bound port on {ip} has no address: {e}"))
}

/// A loopback address whose port was free a moment ago.
pub fn free_local_addr() -> SocketAddr {
    free_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
