//! The codec of one Raft [`Message`] as the payload of a `Message` frame:
//! `from u64 | to u64 | term u64 | body tag u8 | body fields`. A term
//! over [`TERM_MAX`] is malformed. AppendEntries' fields are `prev_index
//! | prev_term | commit | lease_tick | transfer_to | entry count u32 |
//! entries`.

use super::WireError;
use super::codec::{Decoder, Encoder};
use crate::raft::{
    Entry, EntryKind, Membership, Message, MessageBody, Snapshot, SnapshotMeta, TERM_MAX,
};

const TAG_VOTE: u8 = 1;
const TAG_VOTE_RESPONSE: u8 = 2;
const TAG_APPEND: u8 = 3;
const TAG_APPEND_RESPONSE: u8 = 4;
const TAG_SNAPSHOT: u8 = 5;
const TAG_TIMEOUT_NOW: u8 = 6;

/// term, index, kind, data length: the least an entry takes on the wire,
/// used to reject entry counts the payload cannot hold before allocating.
const ENTRY_BYTES_MIN: usize = 8 + 8 + 1 + 4;

/// Encodes a message as a `Message` frame payload. A snapshot body is
/// encoded inline here; the transport sends snapshots as chunks instead
/// (see [`super::write_message`]).
///
/// # Errors
/// [`WireError::FrameTooLarge`] if a field is too long for its length
/// prefix. The frame cap itself is checked by [`super::write_frame`].
pub fn encode_message(message: &Message) -> Result<Vec<u8>, WireError> {
    let mut enc = Encoder::with_capacity(64 + body_data_len(&message.body));
    enc.u64(message.from);
    enc.u64(message.to);
    enc.u64(message.term);
    encode_body(&mut enc, &message.body)?;
    Ok(enc.finish())
}

fn body_data_len(body: &MessageBody) -> usize {
    match body {
        MessageBody::Append { entries, .. } => {
            entries.iter().map(|e| ENTRY_BYTES_MIN + e.data.len()).sum()
        }
        MessageBody::Snapshot { snapshot, .. } => snapshot.data.len(),
        _ => 0,
    }
}

fn encode_body(enc: &mut Encoder, body: &MessageBody) -> Result<(), WireError> {
    match body {
        MessageBody::Vote {
            pre,
            force,
            last_index,
            last_term,
        } => {
            enc.u8(TAG_VOTE);
            enc.bool(*pre);
            enc.bool(*force);
            enc.u64(*last_index);
            enc.u64(*last_term);
        }
        MessageBody::VoteResponse { pre, granted } => {
            enc.u8(TAG_VOTE_RESPONSE);
            enc.bool(*pre);
            enc.bool(*granted);
        }
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
            lease_tick,
            transfer_to,
        } => {
            enc.u8(TAG_APPEND);
            enc.u64(*prev_index);
            enc.u64(*prev_term);
            enc.u64(*commit);
            enc.u64(*lease_tick);
            enc.u64(*transfer_to);
            encode_entries(enc, entries)?;
        }
        MessageBody::AppendResponse {
            success,
            index,
            hint_index,
            hint_term,
            lease_tick,
        } => {
            enc.u8(TAG_APPEND_RESPONSE);
            enc.bool(*success);
            enc.u64(*index);
            enc.u64(*hint_index);
            enc.u64(*hint_term);
            enc.u64(*lease_tick);
        }
        MessageBody::Snapshot {
            snapshot,
            lease_tick,
        } => {
            enc.u8(TAG_SNAPSHOT);
            enc.u64(*lease_tick);
            enc.u64(snapshot.meta.index);
            enc.u64(snapshot.meta.term);
            enc.blob(&snapshot.meta.membership.encode())?;
            enc.blob(&snapshot.data)?;
        }
        MessageBody::TimeoutNow => enc.u8(TAG_TIMEOUT_NOW),
    }
    Ok(())
}

fn encode_entries(enc: &mut Encoder, entries: &[Entry]) -> Result<(), WireError> {
    let count = u32::try_from(entries.len()).map_err(|_| WireError::FrameTooLarge {
        length: entries.len() as u64,
        max: u64::from(u32::MAX),
    })?;
    enc.u32(count);
    for entry in entries {
        enc.u64(entry.term);
        enc.u64(entry.index);
        enc.u8(entry.kind.to_u8());
        enc.blob(&entry.data)?;
    }
    Ok(())
}

/// Parses [`encode_message`]'s output.
///
/// # Errors
/// [`WireError::Malformed`] naming the field that is truncated or
/// invalid, or for trailing bytes.
pub fn decode_message(payload: &[u8]) -> Result<Message, WireError> {
    let mut dec = Decoder::new(payload);
    let from = dec.u64("message from")?;
    let to = dec.u64("message to")?;
    let term = dec.u64("message term")?;
    if term > TERM_MAX {
        return Err(WireError::Malformed("message term over the cap"));
    }
    let body = decode_body(&mut dec)?;
    dec.finish()?;
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

fn decode_body(dec: &mut Decoder<'_>) -> Result<MessageBody, WireError> {
    let body = match dec.u8("message body tag")? {
        TAG_VOTE => MessageBody::Vote {
            pre: dec.bool("vote pre")?,
            force: dec.bool("vote force")?,
            last_index: dec.u64("vote last index")?,
            last_term: dec.u64("vote last term")?,
        },
        TAG_VOTE_RESPONSE => MessageBody::VoteResponse {
            pre: dec.bool("vote response pre")?,
            granted: dec.bool("vote response granted")?,
        },
        TAG_APPEND => MessageBody::Append {
            prev_index: dec.u64("append prev index")?,
            prev_term: dec.u64("append prev term")?,
            commit: dec.u64("append commit")?,
            lease_tick: dec.u64("append lease tick")?,
            transfer_to: dec.u64("append transfer target")?,
            entries: decode_entries(dec)?,
        },
        TAG_APPEND_RESPONSE => MessageBody::AppendResponse {
            success: dec.bool("append response success")?,
            index: dec.u64("append response index")?,
            hint_index: dec.u64("append response hint index")?,
            hint_term: dec.u64("append response hint term")?,
            lease_tick: dec.u64("append response lease tick")?,
        },
        TAG_SNAPSHOT => decode_snapshot_body(dec)?,
        TAG_TIMEOUT_NOW => MessageBody::TimeoutNow,
        _ => return Err(WireError::Malformed("unknown message body tag")),
    };
    Ok(body)
}

fn decode_entries(dec: &mut Decoder<'_>) -> Result<Vec<Entry>, WireError> {
    let count = dec.u32("append entry count")? as usize;
    if count > dec.remaining() / ENTRY_BYTES_MIN {
        return Err(WireError::Malformed(
            "append entry count exceeds the payload",
        ));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let term = dec.u64("entry term")?;
        let index = dec.u64("entry index")?;
        let kind =
            EntryKind::from_u8(dec.u8("entry kind")?).ok_or(WireError::Malformed("entry kind"))?;
        let data = dec.blob("entry data")?.to_vec();
        entries.push(Entry {
            term,
            index,
            kind,
            data,
        });
    }
    Ok(entries)
}

fn decode_snapshot_body(dec: &mut Decoder<'_>) -> Result<MessageBody, WireError> {
    let lease_tick = dec.u64("snapshot lease tick")?;
    let index = dec.u64("snapshot index")?;
    let term = dec.u64("snapshot term")?;
    let membership = Membership::decode(dec.blob("snapshot membership")?)
        .map_err(|_| WireError::Malformed("snapshot membership"))?;
    let data = dec.blob("snapshot data")?.to_vec();
    Ok(MessageBody::Snapshot {
        snapshot: Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership,
            },
            data,
        },
        lease_tick,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::raft::Member;

    pub(crate) fn membership() -> Membership {
        let mut membership = Membership::default();
        for (id, voter) in [(1, true), (2, true), (5, false)] {
            membership.members.insert(
                id,
                Member {
                    voter,
                    peer_addr: format!("127.0.0.1:900{id}"),
                    http_addr: format!("127.0.0.1:800{id}"),
                    incarnation: id * 11,
                },
            );
        }
        membership
    }

    fn entry(index: u64, kind: EntryKind, data: &[u8]) -> Entry {
        Entry {
            term: 4,
            index,
            kind,
            data: data.to_vec(),
        }
    }

    /// One message of every body, with empty and non-empty variable parts.
    pub(crate) fn every_body() -> Vec<MessageBody> {
        let mut bodies = Vec::new();
        for (pre, force) in [(false, false), (true, false), (false, true), (true, true)] {
            bodies.push(MessageBody::Vote {
                pre,
                force,
                last_index: 77,
                last_term: u64::MAX,
            });
            bodies.push(MessageBody::VoteResponse {
                pre,
                granted: force,
            });
        }
        let entry_sets = [
            vec![],
            vec![entry(10, EntryKind::Noop, b"")],
            vec![
                entry(10, EntryKind::Normal, b"command"),
                entry(11, EntryKind::Config, &membership().encode()),
                entry(12, EntryKind::Normal, &[0xff; 300]),
            ],
        ];
        for entries in entry_sets {
            bodies.push(MessageBody::Append {
                prev_index: 9,
                prev_term: 3,
                entries,
                commit: 8,
                lease_tick: 12345,
                transfer_to: 3,
            });
        }
        for success in [false, true] {
            bodies.push(MessageBody::AppendResponse {
                success,
                index: 12,
                hint_index: 5,
                hint_term: 2,
                lease_tick: 999,
            });
        }
        for (data, membership) in [
            (vec![], Membership::default()),
            (b"state".to_vec(), membership()),
        ] {
            bodies.push(MessageBody::Snapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 40,
                        term: 4,
                        membership,
                    },
                    data,
                },
                lease_tick: 7,
            });
        }
        bodies.push(MessageBody::TimeoutNow);
        bodies
    }

    pub(crate) fn message(body: MessageBody) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 4,
            body,
        }
    }

    #[test]
    fn every_body_round_trips() {
        for body in every_body() {
            let message = message(body);
            let bytes = encode_message(&message).unwrap();
            assert_eq!(decode_message(&bytes).unwrap(), message);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_an_error() {
        for body in every_body() {
            let bytes = encode_message(&message(body)).unwrap();
            for cut in 0..bytes.len() {
                assert!(decode_message(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert!(decode_message(&long).is_err());
        }
    }

    #[test]
    fn bad_tags_and_kinds_are_errors() {
        let mut bytes = encode_message(&message(MessageBody::TimeoutNow)).unwrap();
        bytes[24] = 0;
        assert!(decode_message(&bytes).is_err());
        bytes[24] = 200;
        assert!(decode_message(&bytes).is_err());

        let append = MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![entry(1, EntryKind::Normal, b"")],
            commit: 0,
            lease_tick: 0,
            transfer_to: 0,
        };
        let mut bytes = encode_message(&message(append)).unwrap();
        let kind_at = 24 + 1 + 40 + 4 + 16;
        bytes[kind_at] = 9;
        assert!(matches!(
            decode_message(&bytes),
            Err(WireError::Malformed("entry kind"))
        ));
    }

    #[test]
    fn a_term_over_the_cap_is_malformed() {
        let mut over = message(MessageBody::TimeoutNow);
        over.term = TERM_MAX + 1;
        let bytes = encode_message(&over).unwrap();
        assert!(matches!(
            decode_message(&bytes),
            Err(WireError::Malformed("message term over the cap"))
        ));
        over.term = TERM_MAX;
        let bytes = encode_message(&over).unwrap();
        assert_eq!(decode_message(&bytes).unwrap(), over);
    }

    #[test]
    fn a_huge_entry_count_is_rejected_before_allocating() {
        let append = MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
            lease_tick: 0,
            transfer_to: 0,
        };
        let mut bytes = encode_message(&message(append)).unwrap();
        let count_at = bytes.len() - 4;
        bytes[count_at..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_message(&bytes),
            Err(WireError::Malformed(_))
        ));
    }
}
