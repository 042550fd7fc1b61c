//! Registry answers as a client parses them: single-line answers and `GET_AF` lines.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2pcore::protocol::{parse_answer, parse_files_line};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_answer(text);
        for line in text.split('\n') {
            let _ = parse_files_line(line);
        }
    }
});
