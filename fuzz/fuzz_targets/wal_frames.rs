//! WAL frames (src/store/wal/record.rs): bytes as read back from a segment
//! after a crash or damage. Properties: no panic; a frame that passes its
//! CRC decodes or is refused cleanly; decoded headers and batches
//! re-encode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketd::store::wal::record::{
    BATCH, Found, HEADER, Op, OpRef, decode_batch, decode_frame, decode_header, encode_batch,
    encode_frame, encode_header,
};

fn check_frame(bytes: &[u8]) {
    let Found::Frame { kind, body, len } = decode_frame(bytes) else {
        return;
    };
    assert!(len <= bytes.len());
    assert_eq!(encode_frame(kind, body), bytes[..len]);
    match kind {
        HEADER => {
            if let Ok(header) = decode_header(body) {
                assert_eq!(encode_header(&header), bytes[..len]);
            }
        }
        BATCH => {
            if let Ok(ops) = decode_batch(body) {
                let refs: Vec<OpRef<'_>> = ops
                    .iter()
                    .map(|op| match op {
                        Op::Truncate { from, prev_term } => OpRef::Truncate {
                            from: *from,
                            prev_term: *prev_term,
                        },
                        Op::Entries(entries) => OpRef::Entries(entries),
                        Op::HardState(hs) => OpRef::HardState(*hs),
                        Op::App(app) => OpRef::App(*app),
                        Op::Reset { index, term } => OpRef::Reset {
                            index: *index,
                            term: *term,
                        },
                    })
                    .collect();
                assert_eq!(encode_batch(&refs), bytes[..len]);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // As found on disk, and as a body sealed in a valid frame of each kind
    // (so the body decoders see input that passed its CRC).
    check_frame(data);
    if let Some((&kind, body)) = data.split_first() {
        check_frame(&encode_frame(kind % 4, body));
    }
});
