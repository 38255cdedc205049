//! Micro-benchmarks of the envelope construction: seal to 1 and 14
//! recipients, verify (what the relay does per message), open (what a
//! recipient does), batch signature verification, and version 2: seal to
//! the 27 other devices of 14 participants with 2 devices each (derived
//! wraps), verify against the roster state, open, and recompute every wrap.
//!
//! `cargo bench -p tallinn-common --bench crypto`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tallinn_common::envelope::{self, seal, UntrustedEnvelope};
use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::roster::{
    approval_message, Approval, ChannelRecord, DeviceRecord, EntryBody, EntryKind,
    ParticipantRecord, Roster, RosterLog, SignedEntry, StateRecord,
};

/// A roster of `n` members in one channel `c`.
fn world(n: usize) -> (Roster, Vec<Identity>) {
    let ids: Vec<Identity> = (0..n)
        .map(|i| Identity::generate(ParticipantId::new(format!("P{i:02}")).unwrap()))
        .collect();
    let mut text = String::new();
    for id in &ids {
        text.push_str(&id.roster_entry("p", "member"));
    }
    text.push_str("[[channel]]\nid = \"c\"\nmembers = [\"*\"]\n");
    (Roster::parse(&text).unwrap(), ids)
}

/// Version 2: `n` participants with `d` devices each in channel `c`; the
/// log and every device's keys (`devices[p][d]`).
fn world_v2(n: usize, d: usize) -> (RosterLog, Vec<Vec<Identity>>) {
    let mut devices = Vec::new();
    let mut participants = Vec::new();
    let mut identities = Vec::new();
    for i in 0..n {
        let pid = ParticipantId::new(format!("P{i:02}")).unwrap();
        let identity = Identity::generate(pid.clone());
        let keys: Vec<Identity> = (0..d).map(|_| Identity::generate(pid.clone())).collect();
        participants.push(ParticipantRecord {
            id: pid.to_string(),
            name: "p".into(),
            role: 0,
            identity_key: identity.public().sign_key.to_bytes(),
            devices: keys
                .iter()
                .enumerate()
                .map(|(j, k)| DeviceRecord {
                    device: format!("d{j}"),
                    suite: 1,
                    sign_key: k.public().sign_key.to_bytes(),
                    enc_key: k.public().enc_key,
                })
                .collect(),
        });
        devices.push(keys);
        identities.push(identity);
    }
    let members: Vec<String> = participants.iter().map(|p| p.id.clone()).collect();
    let relay = Identity::generate(ParticipantId::new("relay").unwrap());
    let record = StateRecord {
        beneficiary: None,
        chair: members[0].clone(),
        quorum: 1,
        relay_key: relay.public().sign_key.to_bytes(),
        participants,
        channels: vec![ChannelRecord {
            id: "c".into(),
            description: String::new(),
            members,
            observers: vec![],
            post: 0,
            max_tlp: 4,
        }],
    };
    let mut g = SignedEntry::new(&EntryBody {
        index: 0,
        prev_hash: [0; 32],
        kind: EntryKind::Genesis(record),
    });
    g.add_approval(Approval {
        participant: identities[0].id().to_string(),
        signature: identities[0].sign(&approval_message(&g.body)),
    });
    (RosterLog::from_genesis(g, None).unwrap(), devices)
}

fn benches(c: &mut Criterion) {
    {
        let msg = Message::note(Tlp::Amber, "subject", "x".repeat(1024));
        let (log, devices) = world_v2(14, 2);
        let state = log.current().clone();
        let mut g = c.benchmark_group("v2-14x2-devices");
        g.throughput(Throughput::Elements(1));
        g.bench_function("seal 1 KiB to 27 devices", |b| {
            b.iter(|| {
                envelope::seal_v2(&devices[0][0], "d0", &state, "c", black_box(&msg), 1).unwrap()
            })
        });
        let sealed = envelope::seal_v2(&devices[0][0], "d0", &state, "c", &msg, 1).unwrap();
        let bytes = sealed.as_bytes().to_vec();
        g.bench_function("decode+verify (relay)", |b| {
            b.iter(|| {
                UntrustedEnvelope::decode(black_box(&bytes))
                    .unwrap()
                    .verify(state.as_ref())
                    .unwrap()
            })
        });
        g.bench_function("decode+verify+open (recipient device)", |b| {
            b.iter(|| {
                UntrustedEnvelope::decode(black_box(&bytes))
                    .unwrap()
                    .verify(state.as_ref())
                    .unwrap()
                    .open_as(&devices[1][1], Some("d1"))
                    .unwrap()
            })
        });
        let verified = UntrustedEnvelope::decode(&bytes)
            .unwrap()
            .verify(state.as_ref())
            .unwrap();
        g.bench_function("recompute all 27 wraps (audit)", |b| {
            b.iter(|| {
                verified
                    .verify_wraps(black_box(sealed.content_key()), &state)
                    .unwrap()
            })
        });
        g.finish();
    }
    let msg = Message::note(Tlp::Amber, "subject", "x".repeat(1024));
    for n in [2usize, 15] {
        let (roster, ids) = world(n);
        let recipients = n - 1;
        let mut g = c.benchmark_group(format!("recipients-{recipients}"));
        g.throughput(Throughput::Elements(1));
        g.bench_function("seal 1 KiB", |b| {
            b.iter(|| seal(&ids[0], &roster, "c", black_box(&msg), 1).unwrap())
        });
        let sealed = seal(&ids[0], &roster, "c", &msg, 1).unwrap();
        let bytes = sealed.as_bytes().to_vec();
        g.bench_function("decode+verify (relay)", |b| {
            b.iter(|| {
                UntrustedEnvelope::decode(black_box(&bytes))
                    .unwrap()
                    .verify(&roster)
                    .unwrap()
            })
        });
        g.bench_function("decode+verify+open (recipient)", |b| {
            b.iter(|| envelope::open(black_box(&bytes), &roster, &ids[1]).unwrap())
        });
        g.finish();
    }
    let (roster, ids) = world(15);
    let envs: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            seal(&ids[i % 15], &roster, "c", &msg, 1)
                .unwrap()
                .into_bytes()
        })
        .collect();
    let mut g = c.benchmark_group("signatures");
    g.throughput(Throughput::Elements(64));
    g.bench_function("verify 64 one by one", |b| {
        b.iter_batched(
            || {
                envs.iter()
                    .map(|e| UntrustedEnvelope::decode(e).unwrap())
                    .collect::<Vec<_>>()
            },
            |us| {
                for u in &us {
                    let key = roster
                        .participant(&u.claimed_header().sender)
                        .unwrap()
                        .public
                        .sign_key;
                    u.verify_signature(&key).unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("verify 64 batched", |b| {
        b.iter_batched(
            || {
                envs.iter()
                    .map(|e| UntrustedEnvelope::decode(e).unwrap())
                    .collect::<Vec<_>>()
            },
            |us| {
                let keys: Vec<_> = us
                    .iter()
                    .map(|u| {
                        roster
                            .participant(&u.claimed_header().sender)
                            .unwrap()
                            .public
                            .sign_key
                    })
                    .collect();
                let items: Vec<_> = us.iter().zip(keys.iter()).collect();
                envelope::verify_signatures_batch(&items).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(crypto, benches);
criterion_main!(crypto);
