//! shears' integration tests: one binary, one module per area.

mod backend;
mod common;
