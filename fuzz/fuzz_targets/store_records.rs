//! Store records (src/store/codec.rs): values as read back from LMDB.
//! Properties: no panic; a checksum only passes for the key it was made
//! with; decoded values re-encode to the same body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketd::crc32::{checksum, update};
use ticketd::store::codec::{
    decode_entry, decode_hard_state, decode_snapshot_meta, encode_hard_state, encode_snapshot_meta,
    entry_term, log_key, parse_log_key, verify_record,
};

/// `body` sealed as the store seals it: body, then CRC32 of key and body.
fn record(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut value = body.to_vec();
    value.extend_from_slice(&update(checksum(key), body).to_be_bytes());
    value
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let index = rest
        .get(..8)
        .and_then(|k| parse_log_key(k).ok())
        .unwrap_or(0);
    assert_eq!(parse_log_key(&log_key(index)).ok(), Some(index));
    let body = rest.get(8..).unwrap_or_default();
    match selector % 4 {
        0 => {
            // Raw bytes as a stored value, and the same bytes sealed.
            let _ = verify_record(&log_key(index), rest);
            let _ = decode_entry(index, rest);
            let sealed = record(&log_key(index), body);
            assert_eq!(verify_record(&log_key(index), &sealed), Some(body));
            match decode_entry(index, &sealed) {
                Ok(entry) => {
                    assert_eq!(entry.index, index);
                    assert_eq!(entry_term(index, &sealed).ok(), Some(entry.term));
                    let mut again = entry.term.to_be_bytes().to_vec();
                    again.push(entry.kind.to_u8());
                    again.extend_from_slice(&entry.data);
                    assert_eq!(again, body);
                }
                Err(_) => assert!(entry_term(index, &sealed).is_err()),
            }
            if let Some(other) = index.checked_add(1) {
                assert_eq!(
                    verify_record(&log_key(other), &sealed),
                    None,
                    "checksum binds the key"
                );
            }
        }
        1 => {
            if let Some(hard_state) = decode_hard_state(body) {
                assert_eq!(encode_hard_state(&hard_state).as_slice(), body);
            }
        }
        _ => {
            if let Some(meta) = decode_snapshot_meta(body) {
                let encoded = encode_snapshot_meta(&meta);
                assert_eq!(decode_snapshot_meta(&encoded), Some(meta));
            }
        }
    }
});
