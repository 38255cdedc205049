//! Micro-benchmarks of the envelope construction: seal to 1 and 14
//! recipients, verify (what the relay does per message), open (what a
//! recipient does), and batch signature verification.
//!
//! `cargo bench -p tallinn-common --bench crypto`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use tallinn_common::envelope::{self, seal, UntrustedEnvelope};
use tallinn_common::identity::{Identity, ParticipantId};
use tallinn_common::message::{Message, Tlp};
use tallinn_common::roster::Roster;

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

fn benches(c: &mut Criterion) {
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
