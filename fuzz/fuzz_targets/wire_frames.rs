//! Peer frames and the handshake/join decoders (src/wire): anything a
//! peer or a stranger on the peer port can send. Properties: no panic;
//! whatever decodes re-encodes to something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ticketd::wire::{
    FRAME_PAYLOAD_BYTES_MAX, Handshake, JoinAnswer, JoinRequest, LeaveRequest, MessageAssembler,
    Refusal, decode_message, encode_message, read_frame_capped, read_member_request,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => frames(rest),
        1 => {
            if let Ok(message) = decode_message(rest) {
                let encoded = encode_message(&message).expect("a decoded message re-encodes");
                assert_eq!(decode_message(&encoded).ok(), Some(message));
            }
        }
        2 => {
            if let Ok(handshake) = Handshake::decode(rest) {
                assert_eq!(Handshake::decode(&handshake.encode()).ok(), Some(handshake));
            }
        }
        3 => {
            if let Ok(refusal) = Refusal::decode(rest) {
                assert_eq!(Refusal::decode(&refusal.encode()).ok(), Some(refusal));
            }
        }
        4 => {
            if let Ok(request) = JoinRequest::decode(rest) {
                assert_eq!(JoinRequest::decode(&request.encode()).ok(), Some(request));
            }
        }
        5 => {
            if let Ok(answer) = JoinAnswer::decode(rest) {
                assert_eq!(JoinAnswer::decode(&answer.encode()).ok(), Some(answer));
            }
        }
        6 => {
            if let Ok(request) = LeaveRequest::decode(rest) {
                assert_eq!(LeaveRequest::decode(&request.encode()).ok(), Some(request));
            }
        }
        _ => {
            let _ = read_member_request(&mut &rest[..]);
        }
    }
});

/// A connection's byte stream after the handshake: frames until the bytes
/// run out or one is refused, each fed to the assembler.
fn frames(mut stream: &[u8]) {
    let mut assembler = MessageAssembler::default();
    for _ in 0..64 {
        let Ok(frame) = read_frame_capped(&mut stream, FRAME_PAYLOAD_BYTES_MAX) else {
            return;
        };
        if assembler.push(&frame).is_err() {
            return;
        }
    }
}
