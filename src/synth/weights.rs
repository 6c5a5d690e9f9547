//! Seeded random parameters for the fused (Conv + BN) convolutions.
//!
//! Every parameter tensor `k` (in initializer order) draws from its own ChaCha8 stream
//! `(seed, stream k)`, so tensors are generated in parallel and a tensor's values do not depend
//! on how many values the others hold.
//!
//! Scale: a weight is uniform in `[-a, a]` with `a = sqrt(3 * gain / fan_in)`, i.e. variance
//! `gain / fan_in` (fan-in scaling). SiLU has slope 1/2 at 0 and 1 for large inputs, so the
//! stable gain lies between 2 and 4; `GAIN = 2.5` is used, except for the last conv of a
//! residual bottleneck, whose gain is split over the C3's `n` bottlenecks so that the residual
//! adds do not grow the activations with depth. Measured on a uniform random image, the
//! activations of every size stay between about 0.05 and 4 in standard deviation through the 25
//! layers (`tests/it/synth.rs` checks that outputs are finite). Biases are uniform in
//! `[-0.05, 0.05]`.

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::graph::{Init, Param};
use crate::onnx::proto::{TensorProto, tensor_proto::DataType};

/// Variance of a weight times its fan-in.
pub(super) const GAIN: f64 = 2.5;
/// Gain of all residual branches of one C3 together.
const RESIDUAL_GAIN: f64 = 1.0;

/// Gain of the last conv of each of the `n` residual bottlenecks of a C3.
pub(super) fn residual_branch_gain(n: usize) -> f64 {
    RESIDUAL_GAIN / n.max(1) as f64
}
/// 2^-24: scales a 24-bit integer to [0, 1).
const UNIT_24: f32 = 1.0 / (1u32 << 24) as f32;
/// Half-width of the bias range.
const BIAS_RANGE: f32 = 0.05;

/// The initializers for `params`, in the same order, filled from `seed`.
pub(super) fn generate(params: &[Param], seed: u64) -> Vec<TensorProto> {
    params
        .par_iter()
        .enumerate()
        .map(|(stream, param)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(stream as u64);
            let bound = match param.init {
                Init::Bias => BIAS_RANGE,
                Init::Weight { fan_in, gain } => (3.0 * gain / fan_in.max(1) as f64).sqrt() as f32,
            };
            // Fill with random bits in one call, then map each 32-bit word in place to a float
            // (24 random bits give a uniform value in [0, 1)).
            let mut raw = vec![0u8; param.numel() as usize * 4];
            rng.fill_bytes(&mut raw);
            // A plain index loop: this crate builds unoptimised in the test profile, where
            // iterator adapters cost several times more per value.
            let bytes: &mut [u8] = &mut raw;
            let mut i = 0;
            while i < bytes.len() {
                let bits = u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
                let value = ((bits >> 8) as f32 * UNIT_24 * 2.0 - 1.0) * bound;
                let [b0, b1, b2, b3] = value.to_le_bytes();
                bytes[i] = b0;
                bytes[i + 1] = b1;
                bytes[i + 2] = b2;
                bytes[i + 3] = b3;
                i += 4;
            }
            TensorProto {
                dims: param.dims.clone(),
                data_type: Some(DataType::Float as i32),
                name: Some(param.name.clone()),
                raw_data: Some(Bytes::from(raw)),
                ..Default::default()
            }
        })
        .collect()
}
