use super::*;
use proptest::prelude::*;

fn bits_strategy() -> impl Strategy<Value = BitString> {
    (0u64..300, proptest::collection::vec(any::<u64>(), 5)).prop_map(|(len, mut w)| {
        w.truncate(len.div_ceil(64) as usize);
        let r = len % 64;
        if r != 0 {
            if let Some(last) = w.last_mut() {
                *last &= (1u64 << r) - 1;
            }
        }
        BitString { len, words: w }
    })
}

fn query_strategy() -> impl Strategy<Value = ParityQuery> {
    prop_oneof![
        any::<u16>().prop_map(|pass| ParityQuery::Blocks { pass }),
        (any::<u16>(), any::<u32>(), any::<u32>())
            .prop_map(|(pass, start, end)| ParityQuery::Range { pass, start, end }),
    ]
}

fn message_strategy() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            0u8..2,
            any::<u8>(),
            0.0f64..0.5,
            1e-20f64..1.0,
            1e-20f64..1.0,
            any::<u32>(),
            any::<[u8; 32]>(),
            (any::<[u8; 32]>(), any::<u64>(), any::<u64>(), any::<u64>())
        )
            .prop_map(
                |(s, f, v, b, q, es, ec, k, ss, (sh, po, tb, te))| Message::Hello(Hello {
                    sifted_bits: s % (1 << 31),
                    frame_bits: f,
                    variant: v,
                    biconf: b,
                    qber_max: q,
                    eps_sec: es,
                    eps_cor: ec,
                    sample_bits: k,
                    sample_seed: ss,
                    shuffle_seed: sh,
                    pad_offset: po,
                    test_bits: tb.max(te),
                    test_errors: tb.min(te),
                    secrecy_bits: ((s % (1 << 31)) / 2) as f64,
                    secrecy_overhead_bits: (po % 1000) as f64,
                })
            ),
        any::<u64>().prop_map(|output_bits| Message::Done { output_bits }),
        bits_strategy().prop_map(Message::Sample),
        (any::<u32>(), any::<bool>())
            .prop_map(|(errors, proceed)| Message::SampleVerdict { errors, proceed }),
        proptest::collection::vec(
            (
                any::<u32>(),
                proptest::collection::vec(query_strategy(), 0..5)
            ),
            0..4
        )
        .prop_map(Message::ParityQueries),
        proptest::collection::vec((any::<u32>(), bits_strategy()), 0..4)
            .prop_map(Message::ParityAnswers),
        (any::<u128>(), 1u8..=128, any::<u128>()).prop_map(|(hash_key, tag_bits, tag)| {
            Message::VerifyTag {
                hash_key,
                tag_bits,
                tag,
            }
        }),
        any::<bool>().prop_map(|ok| Message::VerifyResult { ok }),
        (
            any::<u128>(),
            1u8..=64,
            proptest::collection::vec(any::<u64>(), 0..20)
        )
            .prop_map(|(hash_key, tag_bits, tags)| Message::FrameTags {
                hash_key,
                tag_bits,
                tags: tags
                    .into_iter()
                    .map(|t| if tag_bits == 64 {
                        t
                    } else {
                        t & ((1u64 << tag_bits) - 1)
                    })
                    .collect(),
            }),
        proptest::collection::btree_set(any::<u32>(), 0..20).prop_map(|s| Message::FrameVerdict {
            failed: s.into_iter().collect()
        }),
        (any::<u64>(), bits_strategy())
            .prop_map(|(output_bits, seed)| Message::PaSeed { output_bits, seed }),
        (any::<u16>(), "[a-z ]{0,40}").prop_map(|(code, reason)| Message::Abort { code, reason }),
        (
            any::<u64>(),
            proptest::collection::vec((any::<i64>(), 0u8..3), 0..20)
        )
            .prop_map(|(pad_offset, mut ev)| {
                ev.sort_by_key(|e| e.0);
                Message::SiftAnnounce {
                    pad_offset,
                    events: ev
                        .into_iter()
                        .map(|(time_ps, k)| SiftEvent {
                            time_ps,
                            kind: [SiftKind::Key, SiftKind::Test0, SiftKind::Test1][k as usize],
                        })
                        .collect(),
                }
            }),
        (
            proptest::collection::vec(any::<u32>(), 0..20),
            any::<[u64; 5]>()
        )
            .prop_map(|(key, t)| Message::SiftReply(SiftReply {
                key,
                test_coincidences: t[0].max(t[1]),
                test_errors: t[0].min(t[1]),
                mixed: t[2],
                guarded: t[3],
                key_off_peak: t[4],
            })),
        (
            any::<u64>(),
            proptest::collection::btree_map(any::<u64>(), (0u8..3, 0u8..3), 0..20)
        )
            .prop_map(|(pad_offset, ev)| Message::BasisAnnounce {
                pad_offset,
                events: ev
                    .into_iter()
                    .map(|(pulse, (kind, k))| BasisEvent {
                        pulse,
                        code: kind | k << 2
                    })
                    .collect(),
            }),
        (
            proptest::collection::vec(0u8..6, 0..20),
            prop_oneof![
                proptest::collection::vec(any::<u64>(), 3),
                proptest::collection::vec(any::<u64>(), 9)
            ]
        )
            .prop_map(|(choices, test_errors)| Message::BasisReply(BasisReply {
                choices,
                test_errors
            })),
        (
            any::<u64>(),
            proptest::collection::btree_map(
                any::<u64>(),
                (prop_oneof![Just(0u8), 2u8..5], any::<u16>()),
                0..20
            )
        )
            .prop_map(|(pad_offset, ev)| Message::TfAnnounce {
                pad_offset,
                events: ev
                    .into_iter()
                    .map(|(p, (window, slice))| (p, TfChoice { window, slice }))
                    .collect(),
            }),
        proptest::collection::vec((prop_oneof![Just(0u8), 2u8..5], any::<u16>()), 0..20).prop_map(
            |v| Message::TfReply(
                v.into_iter()
                    .map(|(window, slice)| TfChoice { window, slice })
                    .collect()
            )
        ),
        (
            any::<u64>(),
            proptest::collection::btree_map(any::<u64>(), 0u8..2, 0..20)
        )
            .prop_map(|(pad_offset, ev)| Message::RelayAnnounce {
                pad_offset,
                events: ev
                    .into_iter()
                    .map(|(pulse, bell)| RelayEvent { pulse, bell })
                    .collect(),
            }),
    ]
}

fn xor_tag(b: &[u8]) -> u64 {
    b.iter().enumerate().fold(0u64, |acc, (i, &x)| {
        acc.rotate_left(7) ^ u64::from(x) ^ i as u64
    })
}

proptest! {
    #[test]
    fn round_trip(msg in message_strategy(), block in any::<u64>(), seq in any::<u32>()) {
        let bytes = encode(block, seq, &msg, xor_tag);
        let env = Envelope::parse(&bytes, DEFAULT_MAX_PAYLOAD).unwrap();
        prop_assert_eq!(env.header.block_id, block);
        prop_assert_eq!(env.header.seq, seq);
        prop_assert_eq!(env.header.message_type, msg.message_type());
        prop_assert_eq!(env.tag(), xor_tag(env.authenticated_bytes()));
        prop_assert_eq!(env.message(&Limits::default()).unwrap(), msg);
    }

    #[test]
    fn every_truncation_is_an_error(msg in message_strategy(), cut in 0usize..400) {
        let bytes = encode(1, 2, &msg, |_| 0);
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(Envelope::parse(&bytes[..cut], DEFAULT_MAX_PAYLOAD).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(env) = Envelope::parse(&bytes, DEFAULT_MAX_PAYLOAD) {
            let _ = env.message(&Limits::default());
        }
    }
}

#[test]
fn malformed_messages_give_typed_errors() {
    let msg = Message::VerifyResult { ok: true };
    let good = encode(7, 0, &msg, |_| 0);
    // Wrong version.
    let mut b = good.clone();
    b[0] = 1;
    assert_eq!(
        Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap_err(),
        WireError::Version(1)
    );
    // Wrong type.
    let mut b = good.clone();
    b[1] = 77;
    assert_eq!(
        Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap_err(),
        WireError::UnknownType(77)
    );
    // Oversized payload length.
    let mut b = good.clone();
    b[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Envelope::parse(&b, 1 << 20).unwrap_err(),
        WireError::Oversized {
            what: "payload",
            ..
        }
    ));
    // Trailing bytes.
    let mut b = good.clone();
    b.push(0);
    assert!(matches!(
        Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap_err(),
        WireError::Trailing { .. }
    ));
    // Bad flag value inside the payload.
    let mut b = good.clone();
    b[HEADER_LEN] = 5;
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "VerifyResult.ok",
            ..
        }
    ));
    // Frame verdicts must be strictly increasing; frame tags no wider than tag_bits.
    let b = encode(7, 0, &Message::FrameVerdict { failed: vec![3, 3] }, |_| 0);
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "FrameVerdict.failed",
            ..
        }
    ));
    let tags = Message::FrameTags {
        hash_key: 1,
        tag_bits: 8,
        tags: vec![0x1ff],
    };
    let b = encode(7, 0, &tags, |_| 0);
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "FrameTags.tag",
            ..
        }
    ));
    // A bit string claiming more bits than the limit, without the bytes.
    let big = Message::Sample(BitString {
        len: 64,
        words: vec![1],
    });
    let mut b = encode(1, 1, &big, |_| 0);
    b[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Oversized { .. }
    ));
    // Bits past the count.
    let bad = Message::Sample(BitString {
        len: 3,
        words: vec![0xff],
    });
    let b = encode(1, 1, &bad, |_| 0);
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid { .. }
    ));
    // NaN in a float field.
    let mut h = encode(
        1,
        0,
        &Message::Hello(Hello {
            sifted_bits: 10,
            frame_bits: 10,
            variant: 0,
            biconf: 0,
            qber_max: 0.11,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
            sample_bits: 1,
            sample_seed: [0; 32],
            shuffle_seed: [0; 32],
            pad_offset: 0,
            test_bits: 0,
            test_errors: 0,
            secrecy_bits: 0.0,
            secrecy_overhead_bits: 0.0,
        }),
        |_| 0,
    );
    h[HEADER_LEN + 14..HEADER_LEN + 22].copy_from_slice(&f64::NAN.to_le_bytes());
    let env = Envelope::parse(&h, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "Hello.qber_max",
            ..
        }
    ));
    // Sifting announcements must be time ordered, of known kinds; replies cannot count
    // more test errors than test coincidences.
    let ev = |t: i64, kind| SiftEvent { time_ps: t, kind };
    let b = encode(
        9,
        0,
        &Message::SiftAnnounce {
            pad_offset: 4,
            events: vec![ev(10, SiftKind::Key), ev(5, SiftKind::Test0)],
        },
        |_| 0,
    );
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "SiftAnnounce.time_ps",
            ..
        }
    ));
    let mut b = encode(
        9,
        0,
        &Message::SiftAnnounce {
            pad_offset: 4,
            events: vec![ev(10, SiftKind::Key)],
        },
        |_| 0,
    );
    b[HEADER_LEN + 8 + 4 + 8] = 3;
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "SiftAnnounce.kind",
            ..
        }
    ));
    let b = encode(
        9,
        1,
        &Message::SiftReply(SiftReply {
            test_coincidences: 2,
            test_errors: 3,
            ..SiftReply::default()
        }),
        |_| 0,
    );
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "SiftReply.test_errors",
            ..
        }
    ));
    // A count beyond the limit is refused before anything is allocated.
    let mut b = encode(
        9,
        0,
        &Message::SiftAnnounce {
            pad_offset: 0,
            events: vec![],
        },
        |_| 0,
    );
    b[HEADER_LEN + 8..HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Oversized {
            what: "SiftAnnounce.count",
            ..
        }
    ));
    // BB84 announcements: pulses strictly increasing, known codes; replies with known
    // choices.
    let b = encode(
        9,
        0,
        &Message::BasisAnnounce {
            pad_offset: 0,
            events: vec![
                BasisEvent { pulse: 5, code: 0 },
                BasisEvent { pulse: 5, code: 1 },
            ],
        },
        |_| 0,
    );
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "BasisAnnounce.pulse",
            ..
        }
    ));
    let b = encode(
        9,
        0,
        &Message::BasisAnnounce {
            pad_offset: 0,
            events: vec![BasisEvent {
                pulse: 5,
                code: 3 << 2,
            }],
        },
        |_| 0,
    );
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "BasisAnnounce.code",
            ..
        }
    ));
    let b = encode(
        9,
        1,
        &Message::BasisReply(BasisReply {
            choices: vec![1, 6],
            test_errors: vec![0; 3],
        }),
        |_| 0,
    );
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "BasisReply.choice",
            ..
        }
    ));
    let b = encode(
        9,
        0,
        &Message::RelayAnnounce {
            pad_offset: 0,
            events: vec![RelayEvent { pulse: 5, bell: 2 }],
        },
        |_| 0,
    );
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "RelayAnnounce.bell",
            ..
        }
    ));
    let b = encode(
        9,
        1,
        &Message::BasisReply(BasisReply {
            choices: vec![],
            test_errors: vec![0; 4],
        }),
        |_| 0,
    );
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "BasisReply.test_errors",
            ..
        }
    ));
    let b = encode(
        9,
        1,
        &Message::TfReply(vec![TfChoice {
            window: 1,
            slice: 0,
        }]),
        |_| 0,
    );
    let env = Envelope::parse(&b, DEFAULT_MAX_PAYLOAD).unwrap();
    assert!(matches!(
        env.message(&Limits::default()).unwrap_err(),
        WireError::Invalid {
            what: "TfReply.window",
            ..
        }
    ));
}
