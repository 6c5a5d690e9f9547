//! Inference backends: one session built once from serialized ONNX bytes, then run many times on
//! batch-1 float32 NCHW inputs.
//!
//! A model whose image input is FLOAT16 (`export.py --half`) is fed each value rounded to the
//! nearest fp16, as val.py with `half` casts its 0..1 image, and its outputs are returned
//! widened to float32. A model whose input height or width is symbolic (`export.py --dynamic`)
//! runs at the spec's image size ([`BackendSpec::with_imgsz`], val.py's 640 by default).
//!
//! Two engines sit behind [`Backend`]: tract (pure Rust, CPU; `tract.rs`) and ONNX
//! Runtime loaded at run time from the `onnxruntime` Python wheel, on the CPU or on CUDA (`ort.rs`,
//! which documents where the library is looked for). Sessions take the model as bytes, never as a
//! path, so a model edited in memory runs without being written. [`open`] builds one.
//!
//! Precondition shared by both engines: the model holds no sparse initializers (tract cannot read
//! them); shears densifies them before building a session.

pub mod bench;
mod heap;
mod ort;
pub mod tract;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};
use ndarray::{ArrayD, ArrayView4};

pub use crate::graph::DEFAULT_IMGSZ;
use crate::graph::densify_sparse;
use crate::onnx::Model;
use crate::onnx::proto::ModelProto;

pub use heap::keep_freed_memory;

/// One inference session. `Send`, so a session can live on the thread that runs inference while
/// other threads preprocess.
pub trait Backend: Send {
    /// The engine: `"tract"` or `"ort"`.
    fn name(&self) -> &'static str;

    /// The execution provider that runs the graph: `"tract"`, `"CPUExecutionProvider"` or
    /// `"CUDAExecutionProvider"`. A CUDA session runs every node on CUDA (building it fails
    /// otherwise), so this never names a provider that did not run.
    fn provider(&self) -> &str;

    /// The shape the first input must have, `[1, C, H, W]`.
    fn input_shape(&self) -> [usize; 4];

    /// Runs the model on `input` (shape [`Backend::input_shape`]) and returns its first output.
    fn run(&mut self, input: ArrayView4<'_, f32>) -> anyhow::Result<ArrayD<f32>>;

    /// Runs the model on `input` and returns every output, in graph order.
    fn run_all(&mut self, input: ArrayView4<'_, f32>) -> anyhow::Result<Vec<ArrayD<f32>>>;
}

/// The inference engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// tract-onnx, CPU only.
    #[default]
    Tract,
    /// ONNX Runtime through the `ort` crate.
    Ort,
}

/// Where the graph runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// The CUDA device with this index (ONNX Runtime only).
    Cuda(u32),
}

/// What [`open`] builds: an engine, a device, the number of threads an inference runs on, and the
/// image size for input dimensions the model does not fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendSpec {
    engine: Engine,
    device: Device,
    threads: Option<usize>,
    imgsz: Option<usize>,
}

impl BackendSpec {
    /// Checks that `engine` can run on `device` (tract runs on the CPU only).
    pub fn new(engine: Engine, device: Device) -> anyhow::Result<Self> {
        if engine == Engine::Tract && device != Device::Cpu {
            return Err(crate::Needs::OrtBackend {
                device: device.to_string(),
            }
            .into());
        }
        Ok(Self {
            engine,
            device,
            threads: None,
            imgsz: None,
        })
    }

    /// Sets the image size: the height and width of a model whose input does not fix them. A
    /// model that fixes another size is refused when opened.
    pub fn with_imgsz(mut self, imgsz: usize) -> Self {
        self.imgsz = Some(imgsz);
        self
    }

    /// The image size asked for, if any.
    pub fn imgsz(&self) -> Option<usize> {
        self.imgsz
    }

    /// Parses the CLI spellings: `backend` is `tract` or `ort`, `device` is `cpu`, `cuda` or
    /// `cuda:N`.
    pub fn parse(backend: &str, device: &str) -> anyhow::Result<Self> {
        Self::new(backend.parse()?, device.parse()?)
    }

    /// Sets the number of threads one inference runs on (default: the number of cores the
    /// process may use).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads.max(1));
        self
    }

    /// Gives each of `sessions` sessions running at once an equal share of the cores (at least
    /// one thread).
    pub fn shared_by(self, sessions: usize) -> Self {
        let threads = self.threads() / sessions.max(1);
        self.with_threads(threads)
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The number of threads one inference runs on.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.engine, self.device)
    }
}

impl FromStr for Engine {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "tract" => Ok(Self::Tract),
            "ort" | "onnxruntime" => Ok(Self::Ort),
            _ => bail!("unknown backend `{s}`: expected `tract` or `ort`"),
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tract => "tract",
            Self::Ort => "ort",
        })
    }
}

impl FromStr for Device {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(index) => index.parse().map(Self::Cuda).with_context(|| {
                    format!("bad device `{s}`: the CUDA device index must be a number")
                }),
                None => bail!("unknown device `{s}`: expected `cpu`, `cuda` or `cuda:N`"),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// Builds a session for `spec` from a serialized ONNX `ModelProto`.
///
/// The model must have one float32 or float16 input of rank 4 with a fixed channel count (batch,
/// height and width may be symbolic: batch 1, the spec's image size), and no sparse
/// initializers.
pub fn open(spec: &BackendSpec, model_bytes: &[u8]) -> anyhow::Result<Box<dyn Backend>> {
    heap::keep_freed_memory();
    match spec.engine {
        Engine::Tract => Ok(Box::new(tract::TractBackend::new(model_bytes, spec)?)),
        Engine::Ort => Ok(Box::new(ort::OrtBackend::new(spec, model_bytes)?)),
    }
}

/// The bytes to give [`open`] for a loaded model: the file's own bytes when they can run as they
/// are, otherwise the model re-encoded with external data inlined and, for tract (which reads
/// only dense tensors), sparse-stored weights densified.
pub fn runnable_bytes(model: &Model, engine: Engine) -> anyhow::Result<Cow<'_, [u8]>> {
    if !needs_densify(&model.proto, engine) && !model.had_external_data() {
        return Ok(Cow::Borrowed(&model.bytes[..]));
    }
    Ok(Cow::Owned(encode_runnable(&model.proto, engine)?))
}

/// Encodes an in-memory model for [`open`] on `engine`: for tract, sparse-stored weights are
/// densified first.
pub fn encode_runnable(proto: &ModelProto, engine: Engine) -> anyhow::Result<Vec<u8>> {
    if !needs_densify(proto, engine) {
        return Ok(crate::onnx::encode(proto));
    }
    let mut dense = proto.clone();
    densify_sparse(&mut dense)?;
    Ok(crate::onnx::encode(&dense))
}

/// Whether `engine` cannot read some tensor of the model as it is stored (tract reads dense only).
fn needs_densify(proto: &ModelProto, engine: Engine) -> bool {
    engine == Engine::Tract
        && proto.graph.as_ref().is_some_and(|g| {
            !g.sparse_initializer.is_empty()
                || g.node
                    .iter()
                    .any(|n| n.attribute.iter().any(|a| a.sparse_tensor.is_some()))
        })
}

/// The element type a model reads its image as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precision {
    F32,
    /// FLOAT16, as `export.py --half` writes: the float32 image is rounded to fp16 values.
    F16,
}

/// The batch-1 input shape from a model's declared input dimensions (`None` = not fixed): a
/// height or width not fixed is `imgsz` ([`DEFAULT_IMGSZ`] when `None`); a fixed one must equal
/// `imgsz` when given.
fn batch1_shape(
    input: &str,
    dims: &[Option<usize>],
    imgsz: Option<usize>,
) -> anyhow::Result<[usize; 4]> {
    let [batch, rest @ ..] = dims else {
        bail!("input `{input}` has no dimensions; expected [1, C, H, W]");
    };
    if dims.len() != 4 {
        bail!(
            "input `{input}` has rank {}; expected a rank-4 NCHW image tensor",
            dims.len()
        );
    }
    if batch.is_some_and(|b| b != 1) {
        bail!(
            "input `{input}` has batch size {}; shears runs batch 1",
            batch.unwrap_or(0)
        );
    }
    let channels = rest[0].with_context(|| {
        format!("input `{input}` has a dynamic channel count (axis 1); expected 3 image channels")
    })?;
    let mut shape = [1, channels, 0, 0];
    for (axis, dim) in [(2, rest[1]), (3, rest[2])] {
        shape[axis] = match (dim, imgsz) {
            (Some(fixed), Some(asked)) if fixed != asked => bail!(
                "input `{input}` fixes its {} at {fixed}, not the image size {asked} asked for; \
                 leave the image size out or export the model at {asked}",
                ["", "", "height", "width"][axis]
            ),
            (Some(fixed), _) => fixed,
            (None, asked) => asked.unwrap_or(DEFAULT_IMGSZ),
        };
    }
    Ok(shape)
}

/// Fails unless `input` has the shape the session was built for.
fn check_input(expected: [usize; 4], input: &ArrayView4<'_, f32>) -> anyhow::Result<()> {
    if input.shape() != expected {
        bail!(
            "input has shape {:?}; the model expects {expected:?}",
            input.shape()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cli_spellings() {
        let spec = BackendSpec::parse("ort", "cuda:1").unwrap();
        assert_eq!(spec.engine(), Engine::Ort);
        assert_eq!(spec.device(), Device::Cuda(1));
        assert_eq!(
            BackendSpec::parse("ort", "cuda").unwrap().device(),
            Device::Cuda(0)
        );
        assert_eq!(
            BackendSpec::parse("tract", "cpu").unwrap(),
            BackendSpec::default()
        );
        assert_eq!(spec.to_string(), "ort on cuda:1");
    }

    #[test]
    fn sessions_share_the_threads() {
        let eight = BackendSpec::default().with_threads(8);
        assert_eq!(eight.shared_by(3).threads(), 2);
        assert_eq!(eight.shared_by(1).threads(), 8);
        assert_eq!(eight.shared_by(0).threads(), 8);
        assert_eq!(eight.shared_by(16).threads(), 1);
    }

    #[test]
    fn rejects_bad_specs() {
        let err = BackendSpec::parse("tract", "cuda").unwrap_err().to_string();
        assert!(err.contains("CPU only"), "{err}");
        assert!(BackendSpec::parse("torch", "cpu").is_err());
        assert!(BackendSpec::parse("ort", "gpu").is_err());
        assert!(BackendSpec::parse("ort", "cuda:x").is_err());
        assert!(BackendSpec::parse("ort", "cuda:-1").is_err());
    }

    #[test]
    fn batch1_shape_fixes_batch_and_sizes_dynamic_images() {
        let s = batch1_shape("images", &[None, Some(3), Some(640), Some(480)], None).unwrap();
        assert_eq!(s, [1, 3, 640, 480]);
        let dynamic = [None, Some(3), None, None];
        assert_eq!(
            batch1_shape("images", &dynamic, None).unwrap(),
            [1, 3, DEFAULT_IMGSZ, DEFAULT_IMGSZ]
        );
        assert_eq!(
            batch1_shape("images", &dynamic, Some(320)).unwrap(),
            [1, 3, 320, 320]
        );
        let fixed = [Some(1), Some(3), Some(640), Some(640)];
        let err = batch1_shape("images", &fixed, Some(320)).unwrap_err();
        assert!(err.to_string().contains("fixes its height at 640"), "{err}");
        assert!(batch1_shape("images", &[Some(1), None, None, None], None).is_err());
        assert!(batch1_shape("images", &[Some(2), Some(3), Some(8), Some(8)], None).is_err());
        assert!(batch1_shape("images", &[Some(1), Some(3)], None).is_err());
    }
}
