//! Socket options std does not expose.

/// Let the kernel notice a peer that vanished without a FIN or RST (cable pulled,
/// machine off): probes after 10 s of silence, every 2 s, 3 tries, so a dead
/// connection errors out within about 16 s instead of hanging forever.
pub(crate) fn set_keepalive(socket: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    {
        let fd = socket.as_raw_fd();
        let set = |level, name, value: libc::c_int| {
            // SAFETY: setsockopt on a descriptor the caller keeps open, with a pointer
            // to a live c_int and its exact size.
            unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        };
        set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 2);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}
