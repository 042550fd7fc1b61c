//! The embedded relay through the C ABI, called from Rust exactly as C calls it:
//! `p2p_registry_config_set_relay` starts it with the registry, `p2p_registry_relay_port`
//! says where, and stopping the registry stops it.

use p2pchat::registry::*;
use p2pchat::status::p2p_status::*;
use std::ffi::CString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ptr::{null, null_mut};

#[test]
fn a_registry_started_with_its_relay_answers_on_the_relay_port_until_stopped() {
    let addr = CString::new("127.0.0.1:0").unwrap();
    // SAFETY: every pointer passed is valid or deliberately NULL, as C would pass it.
    unsafe {
        assert_eq!(
            p2p_registry_config_set_relay(null_mut(), true, 0),
            P2P_NULL_ARGUMENT
        );
        assert_eq!(p2p_registry_relay_port(null(), &mut 0), P2P_NULL_ARGUMENT);
        let mut rc = null_mut();
        assert_eq!(p2p_registry_config_new(addr.as_ptr(), &mut rc), P2P_OK);

        // Off by default: no relay port.
        let mut reg = null_mut();
        assert_eq!(p2p_registry_start_with_config(rc, &mut reg), P2P_OK);
        let mut port = 7u16;
        assert_eq!(p2p_registry_relay_port(reg, &mut port), P2P_OK);
        assert_eq!(port, 0);
        p2p_registry_free(reg);

        assert_eq!(p2p_registry_config_set_relay(rc, true, 0), P2P_OK);
        let mut reg = null_mut();
        assert_eq!(p2p_registry_start_with_config(rc, &mut reg), P2P_OK);
        p2p_registry_config_free(rc);
        assert_eq!(p2p_registry_relay_port(reg, &mut port), P2P_OK);
        assert_ne!(port, 0);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("RELAY/1 {}\n", "0".repeat(80)).as_bytes())
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "ERR denied invalid relay token\n");

        assert_eq!(p2p_registry_stop(reg), P2P_OK);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        // Still readable after the stop.
        let mut after = 0u16;
        assert_eq!(p2p_registry_relay_port(reg, &mut after), P2P_OK);
        assert_eq!(after, port);
        p2p_registry_free(reg);
    }
}
