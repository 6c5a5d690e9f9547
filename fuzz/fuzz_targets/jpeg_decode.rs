//! The exact JPEG decoder on any bytes, with a pixel limit of 2^22: an image or an error, never
//! a panic, and memory bounded by the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = shears::eval::jpeg::decode(data, 1 << 22);
});
