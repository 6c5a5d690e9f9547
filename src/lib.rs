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
pub mod yaml;

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
    /// An image has more pixels than the limit allows; it needs a higher limit (or a smaller
    /// image).
    #[error(
        "image {} is {width}x{height} = {} pixels, over the limit of {limit}",
        image.display(),
        u64::from(*width) * u64::from(*height)
    )]
    PixelLimit {
        image: std::path::PathBuf,
        width: u32,
        height: u32,
        limit: u64,
    },
    /// A device other than the CPU was asked of the tract backend, which runs on the CPU only.
    #[error("the tract backend runs on the CPU only, not on {device}")]
    OrtBackend { device: String },
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
