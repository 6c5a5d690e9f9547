//! What recovering passes share: the OBS algebra (`obs`), OBS pruning of weights for magnitude
//! and N:M targets (`prune_obs`), how much of a layer's error reaches the outputs (`reach`), and
//! the correction of Conv output statistics toward the dense model's (`correct_statistics`).

mod correct_statistics;
pub mod obs;
pub(super) mod prune_obs;
pub(super) mod reach;

use anyhow::{Context, Result};

pub(super) use correct_statistics::correct_statistics;

use super::PassContext;
use super::options::Recover;
use crate::calib::Calibration;
use crate::onnx::proto::{GraphProto, ModelProto};

fn graph_mut(model: &mut ModelProto) -> Result<&mut GraphProto> {
    model.graph.as_mut().context("the model has no graph")
}

/// Runs a pruning pass with its recovery: `plain` prunes by magnitude, `obs` by OBS; both report
/// a line. Then every Conv's output statistics are corrected toward the dense model's
/// ([`correct_statistics`]: pruning a layer shifts what every layer after it sees). After OBS,
/// which already re-solves each layer's bias, the correction matters as the damage grows
/// (yolov5n, global: 30% 0.318 without, 0.315 with, 32 calibration images; 50% 0.231 without
/// (128), 0.251 with (16); 2:4 0.076 without (128), 0.079 with (16)).
pub(super) fn with_recovery(
    model: &mut ModelProto,
    recover: Recover,
    calib: Option<&mut dyn Calibration>,
    plain: impl FnOnce(&mut GraphProto) -> Result<String>,
    obs: impl FnOnce(&mut ModelProto, &mut dyn Calibration) -> Result<String>,
) -> Result<String> {
    let Some(calib) = calib.filter(|_| !recover.is_none()) else {
        return plain(graph_mut(model)?);
    };
    let dense = model.clone();
    let mut summary = match recover {
        Recover::Obs => obs(model, calib)?,
        _ => plain(graph_mut(model)?)?,
    };
    summary += "; ";
    summary += &correct_statistics(model, &dense, &all_convs(model)?, calib)?;
    Ok(summary)
}

/// The calibration a pass that recovers by `recover` needs, or an error saying it is missing.
pub(super) fn calibration<'c>(
    recover: Recover,
    cx: &'c mut PassContext,
) -> Result<Option<&'c mut dyn Calibration>> {
    match (&mut cx.calibration, recover) {
        (_, Recover::None) => Ok(None),
        (Some(calib), _) => Ok(Some(&mut **calib)),
        (None, _) => Err(crate::Needs::CalibrationImages.into()),
    }
}

/// The names of every named Conv node of `model`.
pub(super) fn all_convs(model: &ModelProto) -> Result<Vec<String>> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    Ok(graph
        .node
        .iter()
        .filter(|n| n.op_type() == "Conv" && !n.name().is_empty())
        .map(|n| n.name().to_string())
        .collect())
}
