//! Fine-tuning a pruned model on its own ONNX graph, label-free, by distillation from the dense
//! model it was pruned from (the guide's "train the pruned model for a few epochs").
//!
//! - [`network`] builds the trainable part of each graph (image to Detect head convolutions)
//!   at run time; [`kernels`] holds its maths and gradients.
//! - [`loss`] compares the student's head outputs and block activations with the teacher's;
//!   [`data`] makes the augmented batches both see; [`optim`] is Adam with the pruning held
//!   fixed.
//! - [`fine_tune`] runs the epochs: a seeded share of the images is held out and never trained
//!   on, its loss is measured after every epoch, and the weights of the epoch with the lowest
//!   held-out loss are the result (the only schedule choice made, and made on held-out training
//!   images); when no epoch beats the student as it came, it is written unchanged. Every epoch
//!   ends with a checkpoint from which an interrupted run resumes.
//!
//! Only the values of Conv weights and biases change: the result has the student's nodes,
//! names, shapes, zeros and other tensors.

pub mod checkpoint;
pub mod data;
pub mod kernels;
pub mod loss;
pub mod network;
pub mod optim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use self::checkpoint::Checkpoint;
use self::data::{Augment, Images};
use self::kernels::Tensor;
use self::loss::{LossParts, LossWeights, check_head, distill, feature_distill};
use self::network::{ConvParams, Network};
use self::optim::{Adam, AdamSettings, Mask, cosine_lr};
use crate::onnx::proto::ModelProto;
use crate::progress::Progress;

/// How a student is fine-tuned. The defaults are the default schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FineTuneSettings {
    pub epochs: usize,
    /// Training images are letterboxed to this square size (a multiple of 32).
    pub imgsz: u32,
    pub batch: usize,
    /// Adam's learning rate at the start; it decays along a cosine to 1% of it.
    pub lr: f32,
    pub seed: u64,
    /// The share of the images held out from training to measure the loss on.
    pub holdout: f64,
    /// Use at most this many images (a seeded draw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images_limit: Option<usize>,
    pub augment: Augment,
    pub loss: LossWeights,
}

/// The defaults: 20 epochs were chosen on 40 labelled `coco_extra_train` images kept aside
/// (COCO AP 0.222 there for an OBS 2:4 yolov5n, against 0.212 with 10), and fit the 15 minutes
/// that yolov5n's fine-tuning may take on two cores.
impl Default for FineTuneSettings {
    fn default() -> Self {
        FineTuneSettings {
            epochs: 20,
            imgsz: 320,
            batch: 8,
            lr: 3e-4,
            seed: 0,
            holdout: 0.1,
            images_limit: None,
            augment: Augment::default(),
            loss: LossWeights::default(),
        }
    }
}

impl FineTuneSettings {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("epochs must be 1 or more");
        }
        if self.imgsz < 32 || !self.imgsz.is_multiple_of(32) {
            bail!("imgsz {} must be a multiple of 32", self.imgsz);
        }
        if self.batch == 0 {
            bail!("batch must be 1 or more");
        }
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            bail!("lr {} must be 0 or more", self.lr);
        }
        if !(0.0..0.5).contains(&self.holdout) {
            bail!("holdout {} must be in [0, 0.5)", self.holdout);
        }
        if self.images_limit == Some(0) {
            bail!("images_limit 0 leaves no image to train on");
        }
        let w = &self.loss;
        if [w.boxes, w.obj, w.cls, w.feat]
            .iter()
            .any(|v| !(*v >= 0.0 && v.is_finite()))
        {
            bail!("loss weights must be 0 or more ({w:?})");
        }
        self.augment.validate()
    }
}

/// One epoch's losses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    /// The mean loss of the epoch's training batches.
    pub train: LossParts,
    /// The loss on the held-out images after the epoch, when some are held out.
    pub holdout: Option<LossParts>,
    /// The learning rate at the epoch's last step.
    pub lr: f32,
    pub seconds: f64,
}

/// What a fine-tuning run did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FineTuneReport {
    pub settings: FineTuneSettings,
    pub train_images: usize,
    pub holdout_images: usize,
    /// SHA-256 of each image file used, training then held out, for provenance and overlap
    /// warnings.
    pub image_sha256: Vec<String>,
    pub epochs: Vec<EpochRecord>,
    /// The epoch whose weights were kept: the lowest held-out loss (0: no epoch lowered it and
    /// the student is written unchanged), or the last when nothing is held out.
    pub kept_epoch: usize,
    /// The held-out loss of the student before training, when images are held out.
    pub holdout_before: Option<LossParts>,
}

/// Fine-tunes `student` (a pruned `teacher`) on `images` and returns it with its Conv values
/// trained and the run's report. When `checkpoint` is given, the state after every epoch is
/// written there, and a run whose checkpoint matches (same models, images and settings)
/// continues from it. `progress` shows each epoch's images with the last loss.
pub fn fine_tune(
    student: &ModelProto,
    teacher: &ModelProto,
    images: &[PathBuf],
    settings: &FineTuneSettings,
    checkpoint: Option<&Path>,
    progress: &dyn Progress,
) -> Result<(ModelProto, FineTuneReport)> {
    settings.validate()?;
    let (net, mut params) = Network::from_model(student).context("the student")?;
    let (teacher_net, teacher_params) = Network::from_model(teacher).context("the teacher")?;
    let size = settings.imgsz as usize;
    let student_heads = net.head_shapes(settings.batch, [size, size])?;
    let teacher_heads = teacher_net.head_shapes(settings.batch, [size, size])?;
    if student_heads != teacher_heads {
        bail!(
            "the student's head outputs {student_heads:?} differ from the teacher's \
             {teacher_heads:?}: is the teacher the model the student was pruned from?"
        );
    }
    for head in &student_heads {
        check_head(head[1])?;
    }
    let (train, holdout) = split_images(images, settings)?;
    progress.start("loading training images", None);
    let loaded = Images::load(&[train.clone(), holdout.clone()].concat(), settings.imgsz);
    progress.finish();
    let loaded = loaded?;
    let image_sha256 = loaded
        .paths
        .iter()
        .map(|p| crate::digest::file_sha256(p))
        .collect::<Result<Vec<_>>>()?;
    let train_ids: Vec<usize> = (0..train.len()).collect();
    let holdout_ids: Vec<usize> = (train.len()..loaded.len()).collect();
    let masks: Vec<Mask> = params.iter().map(Mask::of).collect();
    let mut adam = Adam::new(AdamSettings::default(), &params);
    let steps_per_epoch = train_ids.len().div_ceil(settings.batch) as u64;
    let total_steps = steps_per_epoch * settings.epochs as u64;
    let key = checkpoint::run_key(student, teacher, &image_sha256, settings)?;
    let (student_features, teacher_features) = if settings.loss.feat > 0.0 {
        shared_features(&net, &teacher_net, [size, size])?
    } else {
        Default::default()
    };
    // the loss of `params` on a batch and, when `want_grad`, its gradient
    let evaluate = |params: &[ConvParams<f32>], x: Tensor<f32>, want_grad: bool| {
        let t = teacher_net.forward_with(&teacher_params, x.clone(), &teacher_features, false);
        let s = net.forward_with(params, x, &student_features, want_grad);
        let (mut parts, dheads) = distill(&s.heads, &t.heads, &settings.loss, want_grad);
        let (feat, dfeatures) = feature_distill(&s.extra, &t.extra, settings.loss.feat, want_grad);
        parts.feat = feat;
        parts.total += settings.loss.feat * feat;
        let grads = s.kept.map(|kept| {
            let dfeatures = student_features.iter().copied().zip(dfeatures).collect();
            net.backward_with(params, kept, dheads, dfeatures)
        });
        (parts, grads)
    };
    let held_out = |params: &[ConvParams<f32>]| -> Option<LossParts> {
        (!holdout_ids.is_empty()).then(|| {
            mean_loss(&holdout_ids, settings.batch, |ids| {
                evaluate(params, loaded.batch(ids, &Augment::none(), 0), false).0
            })
        })
    };
    let mut state = match checkpoint.and_then(|p| Checkpoint::read_matching(p, &key).transpose()) {
        Some(found) => {
            let found = found?;
            params = found.params.clone();
            adam = found.adam.clone();
            found
        }
        None => Checkpoint {
            key: key.clone(),
            epochs: Vec::new(),
            holdout_before: None,
            best: None,
            params: params.clone(),
            adam: adam.clone(),
        },
    };
    if state.epochs.is_empty() && state.holdout_before.is_none() {
        progress.start("held-out loss before training", None);
        state.holdout_before = held_out(&params);
        progress.finish();
        // the student as it came is the one to beat
        state.best = state.holdout_before.map(|h| (0, h, params.clone()));
    }
    for epoch in state.epochs.len()..settings.epochs {
        let started = Instant::now();
        let mut order = train_ids.clone();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(epoch_seed(
            settings.seed,
            epoch,
        )));
        progress.start(
            &format!("fine-tuning epoch {}/{}", epoch + 1, settings.epochs),
            Some(order.len() as u64),
        );
        let mut lr = settings.lr;
        let train_loss = mean_loss(&order, settings.batch, |ids| {
            let x = loaded.batch(ids, &settings.augment, epoch_seed(settings.seed, epoch));
            let (parts, grads) = evaluate(&params, x, true);
            let grads = grads.expect("gradients asked for");
            lr = cosine_lr(settings.lr, 0.01, adam.step, total_steps);
            adam.update(&mut params, &grads, &masks, lr);
            progress.advance(ids.len() as u64);
            progress.note(&format!("loss {:.5}", parts.total));
            parts
        });
        progress.finish();
        if !train_loss.total.is_finite() {
            bail!(
                "the training loss became {} in epoch {}: lower the learning rate (lr {})",
                train_loss.total,
                epoch + 1,
                settings.lr
            );
        }
        let holdout = held_out(&params);
        let better = match (&holdout, &state.best) {
            (Some(h), Some((_, best, _))) => h.total < best.total,
            _ => true,
        };
        if better {
            state.best = Some((epoch + 1, holdout.unwrap_or(train_loss), params.clone()));
        }
        state.epochs.push(EpochRecord {
            epoch: epoch + 1,
            train: train_loss,
            holdout,
            lr,
            seconds: started.elapsed().as_secs_f64(),
        });
        state.params = params.clone();
        state.adam = adam.clone();
        if let Some(path) = checkpoint {
            state.write(path)?;
        }
    }
    let (kept_epoch, _, best) = state.best.clone().context("no epoch ran")?;
    let kept = if holdout_ids.is_empty() {
        &params
    } else {
        &best
    };
    let mut tuned = student.clone();
    net.write_params(&mut tuned, kept)?;
    Ok((
        tuned,
        FineTuneReport {
            settings: settings.clone(),
            train_images: train_ids.len(),
            holdout_images: holdout_ids.len(),
            image_sha256,
            epochs: state.epochs,
            kept_epoch: if holdout_ids.is_empty() {
                settings.epochs
            } else {
                kept_epoch
            },
            holdout_before: state.holdout_before,
        },
    ))
}

/// The features (see [`Network::features`]) the student and the teacher share: the same node
/// with the same shape at `hw`, as the student's and the teacher's value indices.
fn shared_features(
    student: &Network,
    teacher: &Network,
    hw: [usize; 2],
) -> Result<(Vec<usize>, Vec<usize>)> {
    let student_shapes = student.value_shapes(1, hw)?;
    let teacher_shapes = teacher.value_shapes(1, hw)?;
    let teacher_features: HashMap<&str, usize> = teacher.features().into_iter().collect();
    Ok(student
        .features()
        .into_iter()
        .filter_map(|(name, s)| {
            let t = *teacher_features.get(name)?;
            (student_shapes[s] == teacher_shapes[t]).then_some((s, t))
        })
        .unzip())
}

/// The generator seed of one epoch's order and augmentations.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (epoch as u64 + 1)
}

/// The images split into training and held-out ones (a seeded draw, whatever order they come
/// in; at least one of each when a share is held out), after `images_limit`.
fn split_images(
    images: &[PathBuf],
    settings: &FineTuneSettings,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut all = images.to_vec();
    all.sort();
    all.shuffle(&mut ChaCha8Rng::seed_from_u64(settings.seed));
    if let Some(limit) = settings.images_limit {
        all.truncate(limit);
    }
    let holdout = if settings.holdout > 0.0 {
        ((all.len() as f64 * settings.holdout).round() as usize).max(1)
    } else {
        0
    };
    if all.len() < holdout + 1 {
        bail!(
            "{} images: too few to hold out {holdout} and train on the rest",
            all.len()
        );
    }
    let held = all.split_off(all.len() - holdout);
    all.sort();
    let mut held = held;
    held.sort();
    Ok((all, held))
}

/// The mean of `f` over the batches of `ids`, weighted by batch size.
fn mean_loss(ids: &[usize], batch: usize, mut f: impl FnMut(&[usize]) -> LossParts) -> LossParts {
    let mut sum = LossParts::default();
    for chunk in ids.chunks(batch) {
        sum = sum.add_scaled(chunk.len() as f64, &f(chunk));
    }
    LossParts::default().add_scaled(1.0 / ids.len().max(1) as f64, &sum)
}

impl FineTuneReport {
    /// What the output records under [`crate::onnx::metadata::FINETUNE_KEY`]; `teacher` names
    /// the teacher's file.
    pub fn provenance(&self, teacher: &str) -> serde_json::Value {
        serde_json::json!({
            "tool": "shears",
            "version": env!("CARGO_PKG_VERSION"),
            "teacher": teacher,
            "settings": self.settings,
            "train_images": self.train_images,
            "holdout_images": self.holdout_images,
            "image_sha256": self.image_sha256,
            "kept_epoch": self.kept_epoch,
            "holdout_before": self.holdout_before.map(|l| l.total),
            "epochs": self.epochs.iter().map(|e| serde_json::json!({
                "epoch": e.epoch,
                "train": e.train.total,
                "holdout": e.holdout.map(|h| h.total),
            })).collect::<Vec<_>>(),
        })
    }
}
