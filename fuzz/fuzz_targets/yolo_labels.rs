//! YOLO label file parsing (`labels/*.txt`) for 1 to 256 classes: labels or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&classes, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let _ = shears::eval::dataset::parse_labels(text, usize::from(classes) + 1);
});
