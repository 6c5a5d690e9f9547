//! `finetune`: trains the Conv values of the model the earlier passes pruned, by distillation
//! from the job's input model (the dense teacher), on the pipeline's `calibration:` images.
//!
//! Before: a pruned model. After: the same nodes, names, shapes and zeros, Conv weights and
//! biases trained ([`crate::train::fine_tune`], which documents the loss, the schedule and the
//! held-out discipline), and a `shears.finetune` record. Preconditions: the job's input is the
//! model the student was pruned from (same head outputs), and calibration images are given
//! (`calibration:` with `images:` at least as many as the folder holds, to train on all).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{Pass, PassContext, PassOutput};
use crate::onnx::metadata::{self, FINETUNE_KEY};
use crate::onnx::proto::ModelProto;
use crate::train::{FineTuneSettings, fine_tune};

/// The fine-tuning schedule; every key is optional (the defaults are `shears finetune`'s).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Finetune(pub FineTuneSettings);

impl Pass for Finetune {
    fn name(&self) -> &'static str {
        "finetune"
    }

    fn validate(&self) -> Result<()> {
        self.0.validate()
    }

    fn needs_calibration(&self) -> bool {
        true
    }

    fn needs_input_model(&self) -> bool {
        true
    }

    fn run(&self, model: &mut ModelProto, cx: &mut PassContext) -> Result<PassOutput> {
        let images = cx
            .images
            .context("fine-tuning trains on the calibration images: none were given")?;
        let teacher: &ModelProto = cx
            .input_model
            .context("fine-tuning needs the job's input model as its teacher")?;
        let (tuned, report) =
            fine_tune(model, teacher, &images.images, &self.0, None, cx.progress)?;
        *model = tuned;
        metadata::set(
            model,
            FINETUNE_KEY,
            &report.provenance("the job's input model").to_string(),
        );
        let held_out = |loss: Option<f64>| loss.map_or("-".to_string(), |l| format!("{l:.5}"));
        let kept = match report.kept_epoch.checked_sub(1) {
            Some(i) => report
                .epochs
                .get(i)
                .and_then(|e| e.holdout.map(|h| h.total)),
            None => report.holdout_before.map(|l| l.total),
        };
        Ok(PassOutput::summary(format!(
            "{} images ({} held out), {} epochs at {}px: held-out loss {} -> {} (epoch {} kept)",
            report.train_images,
            report.holdout_images,
            self.0.epochs,
            self.0.imgsz,
            held_out(report.holdout_before.map(|l| l.total)),
            held_out(kept),
            report.kept_epoch
        )))
    }
}
