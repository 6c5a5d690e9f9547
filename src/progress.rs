//! Progress reporting: the library reports through [`Progress`]; the CLI decides how to draw it.
//!
//! A [`Progress`] is one place where phases show, one after the other. Work done inside a phase
//! reports its own phases to a [`Progress::child`], shown nested under it: the outer phase
//! (`sweep point 3/12`) stays while the inner one (`calibrating 5/8`) runs, and the inner one
//! goes when it is done.

/// Receives progress of long work. Implementations must be cheap and thread-safe.
pub trait Progress: Sync {
    /// A new phase starts here, ending the one before: `label` names it, `total` is its number of
    /// steps when known.
    fn start(&self, label: &str, total: Option<u64>);
    /// `n` more steps of the phase here are done.
    fn advance(&self, n: u64);
    /// The phase here is over.
    fn finish(&self);
    /// A detail of the phase here to show beside its label (a running loss, the item at work).
    fn note(&self, _detail: &str) {}
    /// A place for the phases of work done inside the phase here, shown nested under it. Each
    /// child is a place of its own: work running in parallel takes one child each. Dropping a
    /// child ends the phase left open there.
    fn child(&self) -> Box<dyn Progress + '_>;
}

/// Runs `work` as the phase `label` of `progress`, which counts no steps (a spinner); `work`
/// reports its own phases nested under it. The phase ends however `work` returns.
pub fn phase<T>(progress: &dyn Progress, label: &str, work: impl FnOnce(&dyn Progress) -> T) -> T {
    progress.start(label, None);
    let result = work(&*progress.child());
    progress.finish();
    result
}

/// Reports nothing; for library callers and tests.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
    fn child(&self) -> Box<dyn Progress + '_> {
        Box::new(Silent)
    }
}
