use super::*;
use crate::identity::ParticipantId;
use proptest::prelude::*;

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    (0usize..15).prop_map(|i| ErrorCode::ALL[i])
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (".{0,20}", any::<[u8; 32]>())
            .prop_map(|(relay_name, nonce)| Frame::Hello { relay_name, nonce }),
        (".{0,20}", ".{0,20}", any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
            |(participant, device, a, b)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&a);
                signature[32..].copy_from_slice(&b);
                Frame::Auth {
                    participant,
                    device,
                    signature,
                }
            }
        ),
        (".{0,20}", ".{0,20}", any::<u64>()).prop_map(|(participant, device, pending)| {
            Frame::Welcome {
                participant,
                device,
                pending,
            }
        }),
        proptest::collection::vec(any::<u8>(), 0..300)
            .prop_map(|envelope| Frame::Send { envelope }),
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(m, seq)| Frame::Accepted {
            msg_id: MsgId(m),
            seq
        }),
        (any::<[u8; 16]>(), arb_code(), ".{0,40}").prop_map(|(m, code, reason)| {
            Frame::Rejected {
                msg_id: MsgId(m),
                code,
                reason,
            }
        }),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(seq, received_at_ms, envelope)| Frame::Deliver {
                seq,
                received_at_ms,
                envelope
            }),
        any::<u64>().prop_map(|up_to_seq| Frame::Ack { up_to_seq }),
        (arb_code(), ".{0,40}").prop_map(|(code, reason)| Frame::Error { code, reason }),
        any::<u64>().prop_map(|from| Frame::RosterFetch { from }),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..4)
        )
            .prop_map(|(head, first, entries)| Frame::RosterEntries {
                head,
                first,
                entries: entries.into_iter().map(EntryBytes).collect(),
            }),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(|e| Frame::RosterSubmit {
            entry: EntryBytes(e)
        }),
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(index, hash)| Frame::RosterAccepted { index, hash }),
        (
            any::<u64>(),
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(seq, m, received_at_ms, envelope_hash)| Frame::Receipt {
                receipt: crate::evidence::Receipt {
                    body: crate::evidence::ReceiptBody {
                        seq,
                        msg_id: MsgId(m),
                        received_at_ms,
                        envelope_hash,
                    },
                    signature: [7; 64],
                }
            }),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)).prop_map(|b| {
            Frame::CheckpointLatest {
                checkpoint: b.map(|body| SignedCheckpoint {
                    body,
                    signature: [1; 64],
                }),
            }
        }),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(|body| Frame::Checkpoint {
            checkpoint: SignedCheckpoint {
                body,
                signature: [2; 64],
            }
        }),
    ]
}

#[test]
fn known_answer_encodings() {
    // CheckpointLatest{None}: variant 14, option tag 0.
    assert_eq!(
        encode_frame(&Frame::CheckpointLatest { checkpoint: None }),
        vec![0, 0, 0, 2, 14, 0]
    );
    // RosterFetch{from: 5}: variant 9, varint 5.
    assert_eq!(
        encode_frame(&Frame::RosterFetch { from: 5 }),
        vec![0, 0, 0, 2, 9, 5]
    );
    // RosterSubmit{entry: [1, 2]}: variant 11, length-prefixed bytes.
    assert_eq!(
        encode_frame(&Frame::RosterSubmit {
            entry: EntryBytes(vec![1, 2])
        }),
        vec![0, 0, 0, 4, 11, 2, 1, 2]
    );
    assert_eq!(
        encode_frame(&Frame::Ack { up_to_seq: 300 }),
        vec![0, 0, 0, 3, 7, 0xAC, 0x02]
    );
    assert_eq!(
        encode_frame(&Frame::Error {
            code: ErrorCode::ShuttingDown,
            reason: "bye".into()
        }),
        vec![0, 0, 0, 6, 8, 11, 3, b'b', b'y', b'e']
    );
}

#[test]
fn error_codes_are_a_closed_documented_set() {
    for (i, c) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(c.index() as usize, i);
        assert_eq!(postcard::to_allocvec(c).unwrap(), vec![i as u8]);
        assert_eq!(
            ErrorCode::from_close_code(u64::from(c.close_code())),
            Some(*c)
        );
        assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(*c));
    }
    assert_eq!(ErrorCode::from_close_code(0), None);
    let n = ErrorCode::ALL.len();
    assert_eq!(ErrorCode::from_close_code(n as u64 + 1), None);
    assert!(postcard::from_bytes::<ErrorCode>(&[n as u8]).is_err());
}

#[test]
fn oversized_prefix_is_refused_before_reading() {
    assert_eq!(
        frame_len([0xFF; 4], 1024),
        Err(WireError::TooLarge {
            len: u64::from(u32::MAX),
            max: 1024
        })
    );
    assert_eq!(frame_len([0; 4], 1024), Err(WireError::Empty));
    let mut d = FrameDecoder::new(1024);
    d.extend(&[0xFF, 0xFF, 0xFF, 0xFF]);
    assert!(matches!(d.next_frame(), Err(WireError::TooLarge { .. })));
}

#[test]
fn decoder_handles_split_and_coalesced_frames() {
    let frames = vec![
        Frame::Ack { up_to_seq: 1 },
        Frame::Send {
            envelope: vec![1; 100],
        },
        Frame::Ack { up_to_seq: 2 },
    ];
    let mut bytes = Vec::new();
    for f in &frames {
        encode_frame_into(f, &mut bytes);
    }
    let mut d = FrameDecoder::new(1024);
    let mut out = Vec::new();
    for chunk in bytes.chunks(3) {
        d.extend(chunk);
        while let Some(f) = d.next_frame().unwrap() {
            out.push(f);
        }
    }
    assert_eq!(out, frames);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn garbage_and_trailing_bytes_are_malformed() {
    assert_eq!(decode_frame(&[99]), Err(WireError::Malformed));
    let mut ok = encode_frame(&Frame::Ack { up_to_seq: 1 });
    ok.push(0);
    assert_eq!(decode_frame(&ok[4..]), Err(WireError::Malformed));
}

#[test]
fn auth_is_bound_to_nonce_exporter_device_and_key() {
    let ident = Identity::generate(ParticipantId::new("UA").unwrap());
    let other = Identity::generate(ParticipantId::new("EE").unwrap());
    let (nonce, exporter) = ([1u8; 32], [2u8; 32]);
    let Frame::Auth { signature, .. } = sign_auth(&ident, "front-office", &nonce, &exporter) else {
        panic!("sign_auth returns Auth");
    };
    let key = ident.public().sign_key;
    assert!(verify_auth(&key, "front-office", &nonce, &exporter, &signature).is_ok());
    assert!(verify_auth(&key, "back-office", &nonce, &exporter, &signature).is_err());
    assert!(verify_auth(&key, "front-office", &[3; 32], &exporter, &signature).is_err());
    assert!(verify_auth(&key, "front-office", &nonce, &[3; 32], &signature).is_err());
    let other_key = other.public().sign_key;
    assert_eq!(
        verify_auth(&other_key, "front-office", &nonce, &exporter, &signature),
        Err(WireError::BadSignature)
    );
}

proptest! {
    #[test]
    fn frame_round_trip(f in arb_frame()) {
        let bytes = encode_frame(&f);
        let len = frame_len(bytes[..4].try_into().unwrap(), u32::MAX).unwrap();
        prop_assert_eq!(len, bytes.len() - 4);
        prop_assert_eq!(decode_frame(&bytes[4..]).unwrap(), f);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = decode_frame(&bytes);
        let mut d = FrameDecoder::new(512);
        d.extend(&bytes);
        while let Ok(Some(_)) = d.next_frame() {}
    }
}

#[test]
fn decoding_is_linear_in_the_bytes_received() {
    // 1.25 MB of the smallest frames (Ack), arriving in 1 KiB chunks
    // that split frames anywhere.
    let one = encode_frame(&Frame::Ack { up_to_seq: 1 });
    let n = 1_250_000 / one.len();
    let stream: Vec<u8> = one.iter().copied().cycle().take(n * one.len()).collect();
    let mut d = FrameDecoder::new(1024);
    let mut frames = 0;
    for chunk in stream.chunks(1000) {
        d.extend(chunk);
        while let Some(_f) = d.next_frame().unwrap() {
            frames += 1;
        }
    }
    assert_eq!(frames, n);
    assert_eq!(d.buffered(), 0);
    // Only a partial frame is carried over per chunk: far below one
    // move of the whole buffer per frame (which was ~n * 500 bytes).
    let chunks = stream.len().div_ceil(1000) as u64;
    assert!(
        d.bytes_moved() <= chunks * one.len() as u64,
        "moved {} bytes for {} received",
        d.bytes_moved(),
        stream.len()
    );
    // One extend of everything, then draining: no moves at all.
    let mut d = FrameDecoder::new(1024);
    d.extend(&stream);
    while d.next_frame().unwrap().is_some() {}
    assert_eq!(d.bytes_moved(), 0);
}
