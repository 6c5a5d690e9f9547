//! shears: prune exported YOLOv5 ONNX models and prove the result.
//!
//! The ONNX protobuf is the source of truth: passes edit [`onnx::proto::ModelProto`] through a
//! light indexed view ([`graph`]), so everything a pass does not understand passes through
//! untouched and an unchanged model writes back byte-identical.

pub mod analysis;
pub mod backend;
pub mod calib;
pub mod digest;
pub mod eval;
pub mod graph;
pub mod job;
pub mod onnx;
pub mod ops;
pub mod passes;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod sweep;
pub mod synth;
pub mod train;
pub mod verify;

/// What the caller must give or allow, said without naming how: the binary adds its flag
/// (`cli::hint`), a pipeline its YAML key.
#[derive(Debug, thiserror::Error)]
pub enum Needs {
    /// Rewriting `model` would lose data the schema does not know; it needs leave to.
    #[error("{} holds data this version of shears cannot preserve ({finding})", model.display())]
    LossyRewrite {
        model: std::path::PathBuf,
        finding: String,
    },
    /// A pass recovers accuracy from calibration images, and none were given.
    #[error("calibration images are needed to recover accuracy, and none were given")]
    CalibrationImages,
    /// A gate or search compares COCO AP, and the dataset has no COCO annotations of its own.
    #[error("metric coco_ap needs COCO annotations, and the dataset has none of its own")]
    CocoAnnotations,
    /// The dataset root given instead of a data YAML's `path:` does not exist.
    #[error("the dataset root {} does not exist", given.display())]
    GivenDataRoot { given: std::path::PathBuf },
    /// A data YAML's root (`path:`) does not exist, and no other was given.
    #[error(
        "{}: the dataset root `path: {path}` ({}) does not exist",
        file.display(),
        resolved.display()
    )]
    DataRoot {
        file: std::path::PathBuf,
        path: String,
        resolved: std::path::PathBuf,
    },
}

/// A quality gate failed (for example an accuracy budget was exceeded): exit code 1, not 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GateFailed(pub String);
