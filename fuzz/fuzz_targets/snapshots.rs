//! Snapshot chunks (src/wire/snapshot.rs) and the application snapshot
//! decoder (src/ticket/snapshot.rs). Properties: no panic; a decoded
//! State re-encodes, and that encoding decodes to the same bytes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketd::raft::MessageBody;
use ticketd::ticket::State;
use ticketd::wire::SnapshotReassembler;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        chunks(rest);
    } else {
        app_snapshot(rest);
    }
});

/// The input as chunk payloads, each prefixed by a one-byte length.
fn chunks(mut rest: &[u8]) {
    let mut reassembler = SnapshotReassembler::default();
    while let Some((&len, tail)) = rest.split_first() {
        let (payload, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        match reassembler.push(payload) {
            Ok(Some(message)) => {
                if let MessageBody::Snapshot { snapshot, .. } = &message.body {
                    app_snapshot(&snapshot.data);
                }
            }
            Ok(None) => {}
            Err(_) => assert!(
                !reassembler.in_progress(),
                "an error drops the partial snapshot"
            ),
        }
    }
}

fn app_snapshot(bytes: &[u8]) {
    if let Ok(state) = State::decode_snapshot(bytes) {
        let encoded = state.encode_snapshot();
        let again = State::decode_snapshot(&encoded).expect("a re-encoded snapshot decodes");
        assert_eq!(again.encode_snapshot(), encoded);
    }
}
