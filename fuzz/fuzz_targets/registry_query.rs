//! Registry queries, both framings: parsing never panics, and whatever parses formats
//! back to a line that parses to the same query.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2pcore::protocol::parse_query;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = parse_query(data) {
        let line = q.to_string();
        let again = parse_query(line.as_bytes()).expect("formatted query parses");
        assert_eq!(again, q);
        assert!(!line.contains('\n'));
    }
});
