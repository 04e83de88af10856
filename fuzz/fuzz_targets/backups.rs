//! Backup files (src/backup.rs), as `ticketd restore` reads them.
//! Properties: no panic; a file that decodes re-encodes from its state
//! and header to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketd::backup::Backup;

fuzz_target!(|data: &[u8]| {
    if let Ok((backup, state)) = Backup::decode(data) {
        let encoded = Backup::encode(
            &state,
            backup.cluster_id,
            backup.applied_index,
            backup.term,
            backup.taken_unix_ms,
        );
        assert_eq!(encoded, data, "a decoded backup re-encodes to itself");
    }
});
