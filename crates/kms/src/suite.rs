//! The key-store behaviour every backend must have, as scenarios over a store opener;
//! `sqlite` and `pg` run them (PostgreSQL against a server the test starts).
#![allow(clippy::unwrap_used)]

use crate::sql::{SqlStore, CHUNK_BYTES};
use crate::{lane_for, Key, KeyRequest, KeyStore, StoreError};
use qkdnet_core::Bits;
use rand::{Rng, SeedableRng};

/// Opens the store named `name` of the backend under test: a new one the first time,
/// the same one (reopened) after the previous handle was dropped.
pub(crate) type Open<'a> = &'a dyn Fn(&str) -> SqlStore;

fn block(n: usize, seed: u64) -> Bits {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Bits::from_words((0..n.div_ceil(64)).map(|_| rng.gen()).collect(), n)
}

fn slaves(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn req<'a>(lane: u8, master: &'a str, sl: &'a [String], n: u32, size: u32) -> KeyRequest<'a> {
    KeyRequest {
        lane,
        master_sae: master,
        slave_saes: sl,
        number: n,
        size_bytes: size,
    }
}

pub(crate) fn keys_cut_at_the_master_end_are_fetched_once_by_named_slaves_at_the_other(
    open: Open<'_>,
) {
    // KME "A" and KME "B" share blocks; SAE a1 at A asks for keys for b1, b2 at B.
    let a = open("a");
    let b = open("b");
    for (id, seed) in [(1u64, 10u64), (2, 11)] {
        let k = block(100_003, seed);
        a.add_block("B", id, &k, 1_000).unwrap();
        b.add_block("A", id, &k, 1_000).unwrap();
    }
    let lane = lane_for("A", "B");
    let (keys, asg) = a
        .allocate("B", &req(lane, "a1", &slaves(&["b1", "b2"]), 5, 32), 10)
        .unwrap();
    assert_eq!(keys.len(), 5);
    b.assign("A", &asg, 10).unwrap();
    let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let got = b.fetch("a1", "b1", &ids).unwrap();
    for (x, y) in keys.iter().zip(&got) {
        assert_eq!(x.id, y.id);
        assert_eq!(x.bytes, y.bytes);
    }
    // Keys are distinct material.
    assert_ne!(keys[0].bytes, keys[1].bytes);
    // At most once per slave; an SAE not named gets nothing; a wrong master neither.
    assert!(matches!(
        b.fetch("a1", "b1", &ids[..1]),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        b.fetch("a1", "b3", &ids[..1]),
        Err(StoreError::NotEntitled { .. })
    ));
    assert!(matches!(
        b.fetch("zz", "b2", &ids[..1]),
        Err(StoreError::NotFound(_))
    ));
    // A failed request changes nothing: b2 still gets all five.
    assert_eq!(b.fetch("a1", "b2", &ids).unwrap().len(), 5);
    for s in [&a, &b] {
        let acc = s
            .accounting(if std::ptr::eq(s, &a) { "B" } else { "A" })
            .unwrap();
        assert!(acc.balances(), "{acc:?}");
        assert_eq!(acc.held_bits, 0);
        assert_eq!(acc.delivered_bits, 5 * 256);
        // Two blocks of 100 003 bits: 12 500 bytes each, split 6 250 + 6 250; 3 bits
        // of each block are discarded.
        assert_eq!(acc.discarded_bits, 6);
    }
}

pub(crate) fn lanes_serve_the_two_directions_without_contention(open: Open<'_>) {
    let a = open("a");
    let b = open("b");
    let k = block(80_000, 3);
    a.add_block("B", 7, &k, 1_000).unwrap();
    b.add_block("A", 7, &k, 1_000).unwrap();
    // Both masters allocate before either assignment arrives.
    let (ka, asg_a) = a
        .allocate(
            "B",
            &req(lane_for("A", "B"), "a1", &slaves(&["b1"]), 3, 64),
            0,
        )
        .unwrap();
    let (kb, asg_b) = b
        .allocate(
            "A",
            &req(lane_for("B", "A"), "b1", &slaves(&["a1"]), 3, 64),
            0,
        )
        .unwrap();
    b.assign("A", &asg_a, 0).unwrap();
    a.assign("B", &asg_b, 0).unwrap();
    let ids_a: Vec<String> = ka.iter().map(|k| k.id.clone()).collect();
    let ids_b: Vec<String> = kb.iter().map(|k| k.id.clone()).collect();
    let fb = b.fetch("a1", "b1", &ids_a).unwrap();
    let fa = a.fetch("b1", "a1", &ids_b).unwrap();
    assert!(ka.iter().zip(&fb).all(|(x, y)| x.bytes == y.bytes));
    assert!(kb.iter().zip(&fa).all(|(x, y)| x.bytes == y.bytes));
    assert!(ka.iter().all(|x| kb.iter().all(|y| x.bytes != y.bytes)));
}

pub(crate) fn refusals_leave_the_store_unchanged(open: Open<'_>) {
    let a = open("a");
    let b = open("b");
    let k = block(8 * 2 * 1000, 4);
    a.add_block("B", 1, &k, 1_000).unwrap();
    b.add_block("A", 1, &k, 1_000).unwrap();
    assert!(matches!(
        a.add_block("B", 1, &k, 1_000),
        Err(StoreError::DuplicateBlock { block_id: 1, .. })
    ));
    let before = a.accounting("B").unwrap();
    assert!(matches!(
        a.allocate("B", &req(0, "a1", &slaves(&["b1"]), 3, 400), 0),
        Err(StoreError::Insufficient {
            want: 1200,
            have: 1000,
            ..
        })
    ));
    assert!(matches!(
        a.allocate("B", &req(0, "a1", &slaves(&["b1"]), 0, 32), 0),
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(a.accounting("B").unwrap(), before);
    // An assignment that does not start at this end's cursor is refused.
    let (_, mut asg) = a
        .allocate("B", &req(0, "a1", &slaves(&["b1"]), 2, 100), 0)
        .unwrap();
    asg.start_offset += 1;
    assert!(matches!(
        b.assign("A", &asg, 0),
        Err(StoreError::OutOfStep { .. })
    ));
    assert_eq!(b.available_bytes("A", 0).unwrap(), 1000);
}

pub(crate) fn material_and_waiting_keys_expire_and_stay_accounted(open: Open<'_>) {
    let a = open("a");
    let b = open("b");
    let k1 = block(2 * 8 * 3 * CHUNK_BYTES, 5);
    let k2 = block(2 * 8 * 1000, 6);
    for (s, peer) in [(&a, "B"), (&b, "A")] {
        s.add_block(peer, 1, &k1, 100).unwrap();
        s.add_block(peer, 2, &k2, 200).unwrap();
    }
    // Cut part of block 1 (across a chunk boundary), leave keys waiting at B.
    let (keys, asg) = a
        .allocate(
            "B",
            &req(0, "a1", &slaves(&["b1"]), 3, (CHUNK_BYTES / 2 + 7) as u32),
            50,
        )
        .unwrap();
    b.assign("A", &asg, 50).unwrap();
    assert!(b.accounting("A").unwrap().held_bits > 0);
    // At t = 150 the rest of block 1 and the waiting keys expire; block 2 remains.
    let gone_b = b.expire(150).unwrap();
    let gone_a = a.expire(150).unwrap();
    assert!(gone_b > gone_a);
    let acc = b.accounting("A").unwrap();
    assert!(acc.balances(), "{acc:?}");
    assert_eq!(acc.held_bits, 0);
    assert_eq!(acc.available_bits, 2 * 8 * 1000);
    let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    assert!(matches!(
        b.fetch("a1", "b1", &ids),
        Err(StoreError::NotFound(_))
    ));
    // The two ends are still in step on block 2.
    let (k2a, asg2) = a
        .allocate("B", &req(0, "a1", &slaves(&["b1"]), 1, 16), 160)
        .unwrap();
    b.assign("A", &asg2, 160).unwrap();
    let got = b.fetch("a1", "b1", &[k2a[0].id.clone()]).unwrap();
    assert_eq!(got[0].bytes, k2a[0].bytes);
    assert!(a.accounting("B").unwrap().balances());
}

pub(crate) fn the_store_survives_reopening(open: Open<'_>) {
    let k = block(8 * 2 * 500, 8);
    let first = {
        let s = open("a");
        s.add_block("B", 9, &k, 1_000).unwrap();
        let (keys, _) = s
            .allocate("B", &req(0, "a1", &slaves(&["b1"]), 2, 10), 0)
            .unwrap();
        keys[0].bytes.clone()
    };
    let s = open("a");
    let acc = s.accounting("B").unwrap();
    assert!(acc.balances());
    assert_eq!(acc.delivered_bits, 160);
    // The next key continues where the last one ended, never reusing material.
    let (keys, asg) = s
        .allocate("B", &req(0, "a1", &slaves(&["b1"]), 1, 10), 0)
        .unwrap();
    assert_eq!(asg.start_offset, 20);
    assert_ne!(keys[0].bytes, first);
    assert!(matches!(
        s.add_block("B", 9, &k, 1_000),
        Err(StoreError::DuplicateBlock { .. })
    ));
}

pub(crate) fn concurrent_callers_share_commits_and_never_share_material(open: Open<'_>) {
    // Eight threads allocate at once through the group-committing writer; a failing
    // request in the same batch (too large) must not disturb the others.
    let a = std::sync::Arc::new(open("a"));
    a.add_block("B", 1, &block(8 * 2 * 40_000, 9), 1_000)
        .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let a = std::sync::Arc::clone(&a);
            std::thread::spawn(move || {
                let sl = slaves(&["s"]);
                let mut got = Vec::new();
                for i in 0..50 {
                    if i % 10 == t % 10 {
                        assert!(a.allocate("B", &req(0, "m", &sl, 1, 1_000_000), 0).is_err());
                    }
                    let (keys, _) = a.allocate("B", &req(0, "m", &sl, 2, 32), 0).unwrap();
                    got.extend(keys.into_iter().map(|k| (k.id.clone(), k.bytes.clone())));
                }
                got
            })
        })
        .collect();
    let all: Vec<(String, Vec<u8>)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(all.len(), 8 * 50 * 2);
    let ids: std::collections::HashSet<&String> = all.iter().map(|(i, _)| i).collect();
    let bytes: std::collections::HashSet<&Vec<u8>> = all.iter().map(|(_, b)| b).collect();
    assert_eq!(ids.len(), all.len());
    assert_eq!(bytes.len(), all.len());
    let acc = a.accounting("B").unwrap();
    assert!(acc.balances());
    assert_eq!(acc.delivered_bits, 8 * 50 * 2 * 256);
}

#[derive(Debug, Clone)]
enum Op {
    Block(usize, u64),
    Alloc(bool, u32, u32),
    Fetch,
    Expire(u64),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (1usize..60_000, 1u64..400).prop_map(|(n, ttl)| Op::Block(n, ttl)),
        (any::<bool>(), 1u32..6, 1u32..700).prop_map(|(d, n, s)| Op::Alloc(d, n, s)),
        Just(Op::Fetch),
        (1u64..50).prop_map(Op::Expire),
    ]
}

/// Random sequences of blocks, cuts, fetches and expiry (`cases` of them, each on two
/// fresh stores): both ends stay in step and every bit stays accounted.
pub(crate) fn random_operations_keep_both_ends_in_step_and_every_bit_accounted(
    open: Open<'_>,
    cases: u32,
) {
    let case = std::cell::Cell::new(0u32);
    let mut runner =
        proptest::test_runner::TestRunner::new(proptest::test_runner::Config::with_cases(cases));
    let strategy = proptest::collection::vec(op(), 1..40);
    let result = runner.run(&strategy, |ops| {
        case.set(case.get() + 1);
        let a = open(&format!("pa{}", case.get()));
        let b = open(&format!("pb{}", case.get()));
        let (mut now, mut next_block) = (0u64, 0u64);
        let mut pending: Vec<(bool, Key)> = Vec::new();
        for o in ops {
            match o {
                Op::Block(n, ttl) => {
                    let k = block(n, next_block);
                    a.add_block("B", next_block, &k, now + ttl).unwrap();
                    b.add_block("A", next_block, &k, now + ttl).unwrap();
                    next_block += 1;
                }
                Op::Alloc(from_a, n, size) => {
                    let (m, p, lane, mkme, skme) = if from_a {
                        (&a, &b, lane_for("A", "B"), "B", "A")
                    } else {
                        (&b, &a, lane_for("B", "A"), "A", "B")
                    };
                    match m.allocate(mkme, &req(lane, "m", &slaves(&["s"]), n, size), now) {
                        Ok((keys, asg)) => {
                            p.assign(skme, &asg, now).unwrap();
                            pending.extend(keys.into_iter().map(|k| (from_a, k)));
                        }
                        Err(StoreError::Insufficient { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                Op::Fetch => {
                    for (from_a, k) in pending.drain(..) {
                        let p = if from_a { &b } else { &a };
                        match p.fetch("m", "s", std::slice::from_ref(&k.id)) {
                            Ok(got) => proptest::prop_assert!(got[0].bytes == k.bytes),
                            // Expired while waiting.
                            Err(StoreError::NotFound(_)) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                Op::Expire(dt) => {
                    now += dt;
                    a.expire(now).unwrap();
                    b.expire(now).unwrap();
                }
            }
            for (s, peer) in [(&a, "B"), (&b, "A")] {
                let acc = s.accounting(peer).unwrap();
                proptest::prop_assert!(acc.balances(), "{:?}", acc);
            }
            // Both ends hold the same unread material in each lane.
            for lane in [0u8, 1] {
                proptest::prop_assert_eq!(
                    a.available_bytes("B", lane).unwrap(),
                    b.available_bytes("A", lane).unwrap()
                );
            }
        }
        Ok(())
    });
    result.unwrap();
}

/// The master's KME keeps each assignment until the peer acknowledges it; re-sent after
/// a restart, what the peer already applied is ignored and the rest is applied once.
pub(crate) fn unacknowledged_assignments_are_resent_and_applied_once(open: Open<'_>) {
    let a = open("a");
    let b = open("b");
    let k = block(8 * 2 * 2000, 12);
    a.add_block("B", 1, &k, 1_000).unwrap();
    b.add_block("A", 1, &k, 1_000).unwrap();
    let sl = slaves(&["b1"]);
    let mut keys = Vec::new();
    let mut asgs = Vec::new();
    for _ in 0..3 {
        let (k, asg) = a.allocate("B", &req(0, "a1", &sl, 2, 24), 0).unwrap();
        keys.extend(k);
        asgs.push(asg);
    }
    // Only the first reached B before the (imagined) crash.
    b.assign("A", &asgs[0], 0).unwrap();
    assert_eq!(a.unacknowledged("B", 0).unwrap(), asgs);
    a.acknowledged("B", 0, 1).unwrap();
    assert_eq!(a.unacknowledged("B", 0).unwrap(), asgs[1..].to_vec());
    // The restarted KME re-sends from serial 0: B skips what it has and applies the rest.
    b.assign_many("A", &asgs, 0).unwrap();
    b.assign_many("A", &asgs, 0).unwrap();
    let ids: Vec<String> = keys.iter().map(|k| k.id.clone()).collect();
    let got = b.fetch("a1", "b1", &ids).unwrap();
    assert!(keys.iter().zip(&got).all(|(x, y)| x.bytes == y.bytes));
    a.acknowledged("B", 0, 3).unwrap();
    assert!(a.unacknowledged("B", 0).unwrap().is_empty());
    assert_eq!(b.lane_serial("A", 0).unwrap(), 3);
    for (s, peer) in [(&a, "B"), (&b, "A")] {
        let acc = s.accounting(peer).unwrap();
        assert!(acc.balances(), "{acc:?}");
        assert_eq!(acc.delivered_bits, 6 * 24 * 8);
    }
}

/// Every scenario above with the `open` of one backend (the backends' test modules call
/// this through [`run_all`]).
/// A scenario of the suite.
pub(crate) type Scenario = fn(Open<'_>);

/// An owned opener of stores.
pub(crate) type Opener = Box<dyn Fn(&str) -> SqlStore>;

pub(crate) const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "keys_cut_at_the_master_end_are_fetched_once_by_named_slaves_at_the_other",
        keys_cut_at_the_master_end_are_fetched_once_by_named_slaves_at_the_other,
    ),
    (
        "lanes_serve_the_two_directions_without_contention",
        lanes_serve_the_two_directions_without_contention,
    ),
    (
        "refusals_leave_the_store_unchanged",
        refusals_leave_the_store_unchanged,
    ),
    (
        "material_and_waiting_keys_expire_and_stay_accounted",
        material_and_waiting_keys_expire_and_stay_accounted,
    ),
    ("the_store_survives_reopening", the_store_survives_reopening),
    (
        "concurrent_callers_share_commits_and_never_share_material",
        concurrent_callers_share_commits_and_never_share_material,
    ),
    (
        "unacknowledged_assignments_are_resent_and_applied_once",
        unacknowledged_assignments_are_resent_and_applied_once,
    ),
];

/// Runs every scenario, each with its own stores (`open_for(scenario index)` gives the
/// opener), then `cases` random sequences.
pub(crate) fn run_all(open_for: &dyn Fn(usize) -> Opener, cases: u32) {
    for (i, (name, f)) in SCENARIOS.iter().enumerate() {
        eprintln!("store scenario: {name}");
        let open = open_for(i);
        f(&*open);
    }
    let open = open_for(SCENARIOS.len());
    random_operations_keep_both_ends_in_step_and_every_bit_accounted(&*open, cases);
}
