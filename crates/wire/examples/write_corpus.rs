//! Writes one valid encoding of every message type into `fuzz/corpus/wire_message/`
//! (the fuzzers' seed corpus): `cargo run -p qkdnet-wire --example write_corpus`.
#![allow(clippy::unwrap_used, missing_docs)]
use qkdnet_wire::*;

fn main() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wire_message");
    std::fs::create_dir_all(&dir).unwrap();
    let bits = BitString {
        len: 70,
        words: vec![0xdead_beef, 0x2a],
    };
    let msgs = vec![
        Message::Hello(Hello {
            sifted_bits: 1_000_000,
            frame_bits: 65536,
            variant: 1,
            biconf: 0,
            qber_max: 0.11,
            eps_sec: 1e-10,
            eps_cor: 1e-15,
            sample_bits: 100_000,
            sample_seed: [1; 32],
            shuffle_seed: [2; 32],
            pad_offset: 7,
            test_bits: 1000,
            test_errors: 47,
            secrecy_bits: 0.0,
            secrecy_overhead_bits: 0.0,
        }),
        Message::Sample(bits.clone()),
        Message::SampleVerdict {
            errors: 2000,
            proceed: true,
        },
        Message::ParityQueries(vec![
            (0, vec![ParityQuery::Blocks { pass: 0 }]),
            (
                3,
                vec![ParityQuery::Range {
                    pass: 1,
                    start: 10,
                    end: 20,
                }],
            ),
        ]),
        Message::ParityAnswers(vec![(0, bits.clone()), (1, BitString::default())]),
        Message::VerifyTag {
            hash_key: 99,
            tag_bits: 64,
            tag: 12345,
        },
        Message::VerifyResult { ok: true },
        Message::PaSeed {
            output_bits: 5,
            seed: bits,
        },
        Message::Abort {
            code: 1,
            reason: "qber".into(),
        },
        Message::Done { output_bits: 5 },
        Message::FrameTags {
            hash_key: 7,
            tag_bits: 32,
            tags: vec![1, 2, 0xffff_ffff],
        },
        Message::FrameVerdict {
            failed: vec![0, 4, 9],
        },
        Message::SiftAnnounce {
            pad_offset: 1 << 20,
            events: vec![
                SiftEvent {
                    time_ps: 1_000,
                    kind: SiftKind::Key,
                },
                SiftEvent {
                    time_ps: 1_500,
                    kind: SiftKind::Test1,
                },
                SiftEvent {
                    time_ps: 30_000,
                    kind: SiftKind::Test0,
                },
            ],
        },
        Message::SiftReply(SiftReply {
            key: vec![0, 3],
            test_coincidences: 5,
            test_errors: 1,
            mixed: 2,
            guarded: 0,
            key_off_peak: 1,
        }),
        Message::BasisAnnounce {
            pad_offset: 1 << 20,
            events: vec![
                BasisEvent { pulse: 17, code: 0 },
                BasisEvent { pulse: 90, code: 2 },
            ],
        },
        Message::BasisReply(BasisReply {
            choices: vec![0, 3],
            test_errors: vec![0, 1, 0],
        }),
        Message::RelayAnnounce {
            pad_offset: 7,
            events: vec![
                RelayEvent { pulse: 4, bell: 0 },
                RelayEvent { pulse: 11, bell: 1 },
            ],
        },
        Message::TfAnnounce {
            pad_offset: 9,
            events: vec![
                (
                    4,
                    TfChoice {
                        window: 0,
                        slice: 0,
                    },
                ),
                (
                    11,
                    TfChoice {
                        window: 3,
                        slice: 7,
                    },
                ),
            ],
        },
        Message::TfReply(vec![
            TfChoice {
                window: 0,
                slice: 0,
            },
            TfChoice {
                window: 3,
                slice: 8,
            },
        ]),
    ];
    for (i, m) in msgs.iter().enumerate() {
        let b = encode(42, i as u32, m, |_| 0x0123_4567_89ab_cdef);
        std::fs::write(dir.join(format!("{:02}-{:?}", i, m.message_type())), b).unwrap();
    }
}
