//! shears' integration tests: one binary, one module per area.

mod common;
mod synth;
