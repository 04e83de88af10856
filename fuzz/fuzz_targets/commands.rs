//! State-machine commands (src/ticket/command.rs), decoded and applied to
//! one State in sequence. Properties: no panic; decode(encode(c)) == c;
//! after every apply the state still snapshots and the snapshot decodes
//! (the decoder checks the state's cross-references).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketd::ticket::{Command, State};

fuzz_target!(|data: &[u8]| {
    let mut state = State::new();
    let mut rest = data;
    let mut applied = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (bytes, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        let Ok(command) = Command::decode(bytes) else {
            continue;
        };
        assert_eq!(Command::decode(&command.encode()).as_ref(), Ok(&command));
        let _ = state.apply(&command);
        applied += 1;
        let snapshot = state.encode_snapshot();
        let decoded = State::decode_snapshot(&snapshot)
            .unwrap_or_else(|e| panic!("state after {applied} commands does not snapshot: {e}"));
        assert_eq!(decoded.encode_snapshot(), snapshot);
    }
});
