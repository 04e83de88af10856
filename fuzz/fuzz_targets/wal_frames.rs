//! WAL frames (src/store/wal/record.rs): bytes as read back from a segment
//! after a crash or damage, at a place (salt, segment, offset) that is
//! part of both checksums. Properties: no panic; a frame that passes its
//! checksums decodes or is refused cleanly; decoded headers and batches
//! re-encode to the same frame at the same place; a frame never passes
//! at another place than its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketd::store::wal::record::{
    BATCH, Found, HEADER, Op, OpRef, Place, decode_batch, decode_frame, decode_header,
    encode_batch, encode_frame, encode_header, header_place,
};

fn check_frame(bytes: &[u8], place: Place) {
    let Found::Frame { kind, body, len } = decode_frame(bytes, place) else {
        return;
    };
    assert!(len <= bytes.len().next_multiple_of(16));
    let moved = Place {
        offset: place.offset.wrapping_add(16),
        ..place
    };
    assert!(
        !matches!(decode_frame(bytes, moved), Found::Frame { .. }),
        "a frame passed at another offset"
    );
    match kind {
        HEADER => {
            if let Ok((header, salt)) = decode_header(body) {
                let again = encode_header(&header, salt);
                assert!(matches!(
                    decode_frame(&again, header_place(header.seq)),
                    Found::Frame { kind: HEADER, body: b, .. } if b == body
                ));
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
                let mut frame = encode_batch(&refs);
                let placed = frame.place(place);
                assert!(matches!(
                    decode_frame(placed, place),
                    Found::Frame { kind: BATCH, body: b, .. } if b == body
                ));
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a place; the rest is checked as found on disk,
    // and as a body sealed in a valid frame of each kind at that place (so
    // the body decoders see input that passed its checksums).
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let place = Place {
        salt: u64::from(pick >> 4),
        seq: u64::from(pick & 3) + 1,
        offset: u64::from(pick & 12) * 16,
    };
    check_frame(rest, place);
    if let Some((&kind, body)) = rest.split_first() {
        check_frame(&encode_frame(kind % 4, body, place), place);
    }
});
