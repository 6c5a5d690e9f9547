//! Pipeline files: parsing (strict YAML into the spec, pass validation) and the environment
//! expansion of every model path and the output pattern: a spec or an error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shears::pipeline::{ModelSource, expand_env, parse_spec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = parse_spec(text, Path::new("fuzz.yaml")) else {
        return;
    };
    for source in &spec.models {
        let path = match source {
            ModelSource::Path(p) => p,
            ModelSource::PathOrSynth { path, .. } => path,
        };
        let _ = expand_env(path);
    }
    let _ = expand_env(&spec.output);
});
