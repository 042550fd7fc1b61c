//! Every peer-protocol message: requests (versioned and legacy), answers and chat frame
//! headers. Parsing never panics; parsed requests round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2pcore::protocol::{parse_chat_header, parse_peer_answer, parse_peer_request, ChatHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse_peer_request(data) {
        let line = r.to_line();
        if !line.starts_with("CHAT,") && !line.starts_with("FILE,") {
            let trimmed = line.trim_end_matches('\n');
            if let Ok(again) = parse_peer_request(trimmed.as_bytes()) {
                assert_eq!(format!("{again:?}").replace("legacy: true", "legacy: false"),
                           format!("{r:?}").replace("legacy: true", "legacy: false"));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_peer_answer(text);
        if let Ok(ChatHeader::Message(n)) = parse_chat_header(text) {
            assert!(n <= p2pcore::limits::MAX_CHAT_MESSAGE);
        }
    }
});
