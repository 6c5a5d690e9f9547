//! The state of a fine-tuning run after an epoch, written atomically so that an interrupted run
//! resumes where it stopped: a JSON header (the run's key, the epochs done, the best epoch)
//! followed by the parameters, Adam's moments and the best parameters as little-endian f32.
//!
//! A checkpoint belongs to one run: its key hashes the student, the teacher, the images and the
//! settings, and a checkpoint with another key is ignored, never resumed.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::loss::LossParts;
use super::network::ConvParams;
use super::optim::{Adam, AdamSettings};
use super::{EpochRecord, FineTuneSettings};
use crate::onnx::proto::ModelProto;

const MAGIC: &[u8; 16] = b"shears-finetune1";

/// What a run has done so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub key: String,
    pub epochs: Vec<EpochRecord>,
    pub holdout_before: Option<LossParts>,
    /// The epoch (0: before training) with the lowest held-out loss so far, that loss, and its
    /// parameters.
    pub best: Option<(usize, LossParts, Vec<ConvParams<f32>>)>,
    pub params: Vec<ConvParams<f32>>,
    pub adam: Adam,
}

#[derive(Serialize, Deserialize)]
struct Header {
    key: String,
    epochs: Vec<EpochRecord>,
    holdout_before: Option<LossParts>,
    best: Option<(usize, LossParts)>,
    adam: AdamSettings,
    step: u64,
    /// Weight and bias lengths of each Conv.
    sizes: Vec<(usize, usize)>,
}

/// The key of a run: SHA-256 of the settings, the image hashes and both models' encodings.
pub fn run_key(
    student: &ModelProto,
    teacher: &ModelProto,
    image_sha256: &[String],
    settings: &FineTuneSettings,
) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(settings)?);
    for h in image_sha256 {
        hasher.update(h.as_bytes());
    }
    hasher.update(crate::onnx::encode(student));
    hasher.update(crate::onnx::encode(teacher));
    Ok(crate::digest::hex(&hasher.finalize()))
}

impl Checkpoint {
    /// Writes the checkpoint to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let header = Header {
            key: self.key.clone(),
            epochs: self.epochs.clone(),
            holdout_before: self.holdout_before,
            best: self.best.as_ref().map(|(e, l, _)| (*e, *l)),
            adam: self.adam.settings,
            step: self.adam.step,
            sizes: self
                .params
                .iter()
                .map(|p| (p.weight.len(), p.bias.len()))
                .collect(),
        };
        let json = serde_json::to_vec(&header)?;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&json);
        let best = self.best.as_ref().map(|(_, _, p)| p);
        for set in [
            Some(&self.params),
            Some(&self.adam.m),
            Some(&self.adam.v),
            best,
        ]
        .into_iter()
        .flatten()
        {
            for p in set {
                for v in p.weight.iter().chain(&p.bias) {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        crate::onnx::write_atomic(path, &bytes)
            .with_context(|| format!("cannot write the checkpoint {}", path.display()))
    }

    /// The checkpoint at `path` when it exists and belongs to the run `key`; `None` when there
    /// is none or it belongs to another run. A damaged checkpoint is an error naming it.
    pub fn read_matching(path: &Path, key: &str) -> Result<Option<Checkpoint>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read checkpoint {}", path.display()));
            }
        };
        let damaged = || format!("checkpoint {} is damaged; remove it", path.display());
        if bytes.len() < 24 || &bytes[..16] != MAGIC {
            bail!(damaged());
        }
        let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
        let header: Header = bytes
            .get(24..24 + len.min(bytes.len()))
            .and_then(|h| serde_json::from_slice(h).ok())
            .with_context(damaged)?;
        if header.key != key {
            return Ok(None);
        }
        let mut values = bytes[24 + len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")));
        let mut read_set = || -> Option<Vec<ConvParams<f32>>> {
            header
                .sizes
                .iter()
                .map(|&(w, b)| {
                    let weight: Vec<f32> = values.by_ref().take(w).collect();
                    let bias: Vec<f32> = values.by_ref().take(b).collect();
                    (weight.len() == w && bias.len() == b).then_some(ConvParams { weight, bias })
                })
                .collect()
        };
        let params = read_set().with_context(damaged)?;
        let m = read_set().with_context(damaged)?;
        let v = read_set().with_context(damaged)?;
        let best = match header.best {
            Some((epoch, loss)) => Some((epoch, loss, read_set().with_context(damaged)?)),
            None => None,
        };
        Ok(Some(Checkpoint {
            key: header.key,
            epochs: header.epochs,
            holdout_before: header.holdout_before,
            best,
            params,
            adam: Adam {
                settings: header.adam,
                step: header.step,
                m,
                v,
            },
        }))
    }
}
