//! Progress reporting: the library reports through [`Progress`]; the CLI decides how to draw it.

/// Receives progress of long work. Implementations must be cheap and thread-safe.
pub trait Progress: Sync {
    /// A new phase starts: `label` names it, `total` is its number of steps when known.
    fn start(&self, label: &str, total: Option<u64>);
    /// `n` more steps of the current phase are done.
    fn advance(&self, n: u64);
    /// The current phase is over.
    fn finish(&self);
    /// A detail of the current phase to show beside its label (a running loss).
    fn note(&self, _detail: &str) {}
}

/// Reports nothing; for library callers and tests.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}
