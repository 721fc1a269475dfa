//! Any bytes: parsing an envelope and decoding its payload must never panic, and a
//! message that decodes must re-encode to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qkdnet_wire::{encode, Envelope, Limits};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse(data, 1 << 24) {
        if let Ok(msg) = env.message(&Limits::default()) {
            let tag = env.tag();
            let again = encode(env.header.block_id, env.header.seq, &msg, |_| tag);
            assert_eq!(again, data);
        }
    }
});
