//! Latency measurement of a [`Backend`]: warm-up runs, then timed runs on one fixed input.

use std::num::NonZeroUsize;
use std::time::Instant;

use ndarray::Array4;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::Backend;
use crate::progress::Progress;

/// Latency statistics of the timed runs, in milliseconds per inference.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Number of timed runs.
    pub runs: usize,
    /// Number of untimed warm-up runs before them.
    pub warmup: usize,
    pub median_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// 10th and 90th percentiles (linear interpolation between order statistics).
    pub p10_ms: f64,
    pub p90_ms: f64,
}

/// A batch-1 input of `shape` with values uniform in [0, 1), the same for the same seed.
pub fn random_input(shape: [usize; 4], seed: u64) -> Array4<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array4::from_shape_simple_fn(shape, || rng.random::<f32>())
}

/// One model to time: its session and its input.
pub struct Contender {
    pub backend: Box<dyn Backend>,
    pub input: Array4<f32>,
}

/// Timed runs a model makes in one turn of [`time_in_turns`].
pub const TURN_RUNS: usize = 5;

/// Times several models in turns. Each first runs `warmup` times untimed. Then, until every
/// model has `runs` timed runs, each takes a turn: one untimed run, which lets the previous
/// model's threads go idle and brings this model's weights back into the caches, then up to
/// [`TURN_RUNS`] runs, each timed on its own. Turns expose every model to the same changes of
/// machine load, so their ratios hold on a busy machine where timing one model after the other
/// would not; the runs within a turn keep the warm state a deployed model runs in. A model whose
/// run fails keeps its error and drops out; the others go on. Reports one step per inference
/// to `progress`.
pub fn time_in_turns(
    contenders: &mut [Contender],
    warmup: usize,
    runs: NonZeroUsize,
    progress: &dyn Progress,
) -> Vec<anyhow::Result<Timing>> {
    let mut samples: Vec<anyhow::Result<Vec<f64>>> = contenders
        .iter()
        .map(|_| Ok(Vec::with_capacity(runs.get())))
        .collect();
    progress.start("warm-up", Some((warmup * contenders.len()) as u64));
    for (contender, slot) in contenders.iter_mut().zip(&mut samples) {
        for _ in 0..warmup {
            run_once(contender, slot, false);
            progress.advance(1);
        }
    }
    progress.finish();
    progress.start("timed runs", Some((runs.get() * contenders.len()) as u64));
    loop {
        let mut turns = 0;
        for (contender, slot) in contenders.iter_mut().zip(&mut samples) {
            let turn = match slot {
                Ok(taken) => (runs.get() - taken.len()).min(TURN_RUNS),
                Err(_) => 0,
            };
            if turn == 0 {
                continue;
            }
            turns += 1;
            run_once(contender, slot, false);
            for _ in 0..turn {
                run_once(contender, slot, true);
                progress.advance(1);
            }
        }
        if turns == 0 {
            break;
        }
    }
    progress.finish();
    samples
        .into_iter()
        .map(|s| s.map(|s| summarize(s, warmup)))
        .collect()
}

/// Runs `contender` once: adds the time in milliseconds to `slot` when `timed`, or replaces it
/// with the error. Does nothing once `slot` holds an error.
fn run_once(contender: &mut Contender, slot: &mut anyhow::Result<Vec<f64>>, timed: bool) {
    let Ok(taken) = slot else { return };
    let start = Instant::now();
    match contender.backend.run(contender.input.view()) {
        Ok(_) if timed => taken.push(start.elapsed().as_secs_f64() * 1e3),
        Ok(_) => {}
        Err(err) => *slot = Err(err),
    }
}

/// Order statistics of the samples (milliseconds); `samples` must not be empty.
fn summarize(mut samples: Vec<f64>, warmup: usize) -> Timing {
    samples.sort_by(f64::total_cmp);
    Timing {
        runs: samples.len(),
        warmup,
        median_ms: quantile(&samples, 0.5),
        mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
        min_ms: samples[0],
        max_ms: samples[samples.len() - 1],
        p10_ms: quantile(&samples, 0.1),
        p90_ms: quantile(&samples, 0.9),
    }
}

/// The `q` quantile of sorted, non-empty `sorted`, interpolating linearly between the order
/// statistics at positions `q * (n - 1)` (numpy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [10, 50, 90]) == [1.4, 3.0, 7.6]
        let t = summarize(vec![4.0, 1.0, 10.0, 3.0, 2.0], 0);
        assert!((t.p10_ms - 1.4).abs() < 1e-12);
        assert_eq!(t.median_ms, 3.0);
        assert!((t.p90_ms - 7.6).abs() < 1e-12);
        assert_eq!((t.min_ms, t.max_ms, t.mean_ms), (1.0, 10.0, 4.0));
        assert_eq!(summarize(vec![7.0], 2).p90_ms, 7.0);
    }

    #[test]
    fn random_input_is_seeded() {
        let a = random_input([1, 3, 4, 5], 7);
        assert_eq!(a, random_input([1, 3, 4, 5], 7));
        assert_ne!(a, random_input([1, 3, 4, 5], 8));
        assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
    }
}
