//! Arbitrary bytes through the v3 → v4 converter: no panic; whatever converts validates as v4
//! structure (every converted line reads back as a v4 conversation).
#![no_main]

use brightrun_core::DatasetFormat;
use brightrun_core::dataset::{Conversation, convert_v3_to_v4};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    if convert_v3_to_v4(data, &mut out, 4096).is_ok() {
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let value: serde_json::Value = match serde_json::from_slice(line) {
                Ok(value) => value,
                Err(error) => panic!("converter wrote invalid JSON: {error}"),
            };
            if let Err(error) = Conversation::from_json(&value, &DatasetFormat::V4) {
                panic!("converter wrote a line that is not v4: {error}");
            }
        }
    }
});
