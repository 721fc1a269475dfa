//! Any bytes as a bit file: reading never panics and round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use qkdnet_core::Bits;

fuzz_target!(|data: &[u8]| {
    let n = data.len() * 8;
    if let Some(b) = Bits::from_msb_bytes(data, n) {
        assert_eq!(b.to_msb_bytes(), data);
        if n > 3 {
            let c = Bits::from_msb_bytes(data, n - 3).expect("shorter prefix");
            assert_eq!(c.len(), n - 3);
        }
    }
});
