//! The ONNX Runtime backend, on the CPU or on CUDA, through the `ort` crate.
//!
//! ONNX Runtime is loaded at run time (no download, no link-time dependency) from the library of
//! the PyPI `onnxruntime` wheel, which must be version 1.31.x. The first library found wins:
//! 1. `ORT_DYLIB_PATH`, when set and not empty: that file and no other (relative to the current
//!    directory);
//! 2. `.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*` in the current
//!    directory or the nearest of its ancestors that has one;
//! 3. the same, from the folder of the running executable upward (finds `<repo>/.venv` from
//!    `<repo>/target/release/shears`);
//! 4. the same in the source folder shears was compiled from (last resort).
//!
//! The library is loaded and the ONNX Runtime environment created once per process; a failure
//! is remembered and reported again on every later attempt.
//!
//! A CUDA session registers the CUDA execution provider with `error_on_failure` and disables the
//! CPU fallback, so it either runs every node on CUDA or fails to build: never a silent CPU run.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ::ort::environment::Environment;
use ::ort::ep::{self, ExecutionProvider};
use ::ort::session::Session;
use ::ort::session::builder::{AutoDevicePolicy, SessionBuilder};
use ::ort::value::{TensorElementType, TensorRef, ValueType};
use anyhow::{Context, anyhow, bail};
use half::f16;
use ndarray::{ArrayD, ArrayView4};

use super::{Backend, BackendSpec, Device, Precision, batch1_shape, check_input};

/// The ONNX Runtime release series shears is built and tested against.
const REQUIRED_SERIES: &str = "1.31.";

/// What to do when no usable library is found.
const INSTALL_HINT: &str = "run `scripts/setup-venv.sh` in the shears repository (it creates \
     .venv with the onnxruntime 1.31.1 wheel, whose library shears loads), or set ORT_DYLIB_PATH \
     to a libonnxruntime.so of version 1.31.x (from onnxruntime-gpu 1.31.1 for CUDA); or use \
     `--backend tract` (in a pipeline, `backend: tract`), which needs no library";

/// The loaded library and the process-wide ONNX Runtime environment.
struct Runtime {
    env: Environment,
    path: PathBuf,
    /// Our own handle on the library, held so it is never unloaded.
    _library: libloading::Library,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process-wide runtime, loading it on first use.
fn runtime() -> anyhow::Result<&'static Runtime> {
    RUNTIME
        .get_or_init(|| load_runtime().map_err(|err| format!("{err:#}")))
        .as_ref()
        .map_err(|err| anyhow!("{err}"))
}

fn load_runtime() -> anyhow::Result<Runtime> {
    let path = find_library()?;
    let (library, version) = read_version(&path)?;
    if !version.starts_with(REQUIRED_SERIES) {
        bail!(
            "ONNX Runtime at {} is version {version}; shears needs 1.31.x: {INSTALL_HINT}",
            path.display()
        );
    }
    let env = ::ort::init_from(&path)
        .with_context(|| format!("could not load ONNX Runtime from {}", path.display()))?
        .with_name("shears")
        .with_telemetry(false)
        .build()
        .with_context(|| {
            format!(
                "could not create the ONNX Runtime environment ({})",
                path.display()
            )
        })?;
    Ok(Runtime {
        env,
        path,
        _library: library,
    })
}

/// Finds the library in the order the module documentation gives.
fn find_library() -> anyhow::Result<PathBuf> {
    if let Some(var) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let path = std::path::absolute(&var).unwrap_or_else(|_| PathBuf::from(&var));
        if !path.is_file() {
            bail!(
                "ORT_DYLIB_PATH is {}, which is not a file: {INSTALL_HINT}",
                path.display()
            );
        }
        return Ok(path);
    }
    let mut starts = Vec::new();
    if let Ok(dir) = std::env::current_dir() {
        starts.push(dir);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        starts.push(dir);
    }
    starts.dedup();
    let found = starts
        .iter()
        .flat_map(|start| start.ancestors())
        .chain([Path::new(env!("CARGO_MANIFEST_DIR"))])
        .find_map(venv_library);
    found.with_context(|| {
        let places: Vec<String> = starts.iter().map(|d| d.display().to_string()).collect();
        format!(
            "no ONNX Runtime library: ORT_DYLIB_PATH is not set and no \
             .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* exists in {} \
             or their parent folders, nor in {}: {INSTALL_HINT}",
            places.join(" or "),
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

/// `dir/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`, if any (the
/// last in name order, so a versioned file wins over a bare `.so`).
fn venv_library(dir: &Path) -> Option<PathBuf> {
    let lib = dir.join(".venv/lib");
    let mut candidates: Vec<PathBuf> = sorted_entries(&lib, "python3")
        .into_iter()
        .flat_map(|python| {
            sorted_entries(
                &python.join("site-packages/onnxruntime/capi"),
                "libonnxruntime.so",
            )
        })
        .filter(|path| path.is_file())
        .collect();
    candidates.pop()
}

/// The entries of `dir` whose names start with `prefix`, sorted; none when unreadable.
fn sorted_entries(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .collect();
    paths.sort();
    paths
}

/// Loads the library and asks it for its version, before `ort` commits to it.
fn read_version(path: &Path) -> anyhow::Result<(libloading::Library, String)> {
    // SAFETY: loading runs the library's initialisers; this is the library ort loads next.
    let library = unsafe { libloading::Library::new(path) }
        .with_context(|| format!("could not load ONNX Runtime from {}", path.display()))?;
    let version = {
        type GetApiBase = unsafe extern "system" fn() -> *const ::ort::sys::OrtApiBase;
        // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
        let get_api_base =
            unsafe { library.get::<GetApiBase>(b"OrtGetApiBase") }.with_context(|| {
                format!(
                    "{} is not an ONNX Runtime library (no OrtGetApiBase)",
                    path.display()
                )
            })?;
        // SAFETY: both calls take no arguments and return static data owned by the library.
        let base = unsafe { get_api_base() };
        if base.is_null() {
            bail!("{}: OrtGetApiBase returned nothing", path.display());
        }
        let raw = unsafe { ((*base).GetVersionString)() };
        if raw.is_null() {
            bail!("{}: ONNX Runtime reports no version", path.display());
        }
        unsafe { CStr::from_ptr(raw) }
            .to_string_lossy()
            .into_owned()
    };
    Ok((library, version))
}

/// Converts a session-builder error, which carries the builder back, into a plain one.
fn builder_err(err: ::ort::Error<SessionBuilder>) -> ::ort::Error {
    err.into()
}

/// Registers CUDA device `device` with no CPU fallback, or explains why it cannot run.
fn use_cuda(
    builder: SessionBuilder,
    device: u32,
    runtime: &Runtime,
) -> anyhow::Result<SessionBuilder> {
    let library = runtime.path.display();
    if !ep::CUDA::is_available()? {
        bail!(
            "CUDA was requested but the ONNX Runtime at {library} was built without CUDA \
             (the CPU-only `onnxruntime` wheel): install `onnxruntime-gpu==1.31.1` in its place \
             (it needs CUDA 13 and cuDNN 9), or run on the CPU (`--device cpu`; in a pipeline, \
             `device: cpu`)"
        );
    }
    let cuda = ep::CUDA::default()
        .with_device_id(i32::try_from(device).context("CUDA device index too large")?)
        .build()
        .error_on_failure();
    builder
        .with_execution_providers([cuda])
        .map_err(builder_err)
        .with_context(|| {
            format!(
                "could not start the CUDA execution provider on device {device} \
                 (ONNX Runtime {library}): onnxruntime-gpu 1.31.1 needs an NVIDIA driver, the \
                 CUDA 13 runtime (libcudart.so.13, libcublas.so.13, libcufft.so.12) and cuDNN 9 \
                 (libcudnn.so.9) on the library path"
            )
        })?
        .with_disable_cpu_fallback()
        .map_err(builder_err)
        .context("could not disable the CPU fallback")
}

/// An ONNX Runtime session on one execution provider.
pub(super) struct OrtBackend {
    session: Session,
    provider: &'static str,
    input_shape: [usize; 4],
    precision: Precision,
}

impl OrtBackend {
    /// Builds a session from the model bytes for the device and thread count of `spec`.
    pub(super) fn new(spec: &BackendSpec, model_bytes: &[u8]) -> anyhow::Result<Self> {
        let runtime = runtime()?;
        let builder = Session::builder(&runtime.env)?
            .with_intra_threads(spec.threads())
            .map_err(builder_err)?;
        let (mut builder, provider) = match spec.device() {
            // Never let ONNX Runtime pick another device on its own.
            Device::Cpu => (
                builder
                    .with_auto_device(AutoDevicePolicy::PreferCPU)
                    .map_err(builder_err)?,
                ep::CPU::NAME,
            ),
            Device::Cuda(device) => (use_cuda(builder, device, runtime)?, ep::CUDA::NAME),
        };
        let session = builder.commit_from_memory(model_bytes).with_context(|| {
            let placement = match spec.device() {
                Device::Cpu => "",
                Device::Cuda(_) => {
                    " with every node on CUDA (the CPU fallback is disabled so that a CUDA run \
                     never silently runs on the CPU)"
                }
            };
            format!("ONNX Runtime could not build a session from the model{placement}")
        })?;
        let (precision, input_shape) = declared_input(&session, spec.imgsz())?;
        Ok(Self {
            session,
            provider,
            input_shape,
            precision,
        })
    }

    fn outputs(
        &mut self,
        input: ArrayView4<'_, f32>,
        count: usize,
    ) -> anyhow::Result<Vec<ArrayD<f32>>> {
        check_input(self.input_shape, &input)?;
        let input = input.as_standard_layout();
        let half;
        let tensor = match self.precision {
            Precision::F32 => TensorRef::from_array_view(&input)?.into_dyn(),
            Precision::F16 => {
                half = input.mapv(f16::from_f32);
                TensorRef::from_array_view(&half)?.into_dyn()
            }
        };
        let outputs = self
            .session
            .run(::ort::inputs![tensor])
            .context("ONNX Runtime inference failed")?;
        outputs
            .values()
            .take(count)
            .enumerate()
            .map(|(index, value)| {
                let widened = value
                    .try_extract_array::<f16>()
                    .map(|view| view.mapv(f16::to_f32));
                widened
                    .or_else(|_| value.try_extract_array::<f32>().map(|view| view.to_owned()))
                    .with_context(|| format!("output {index} is not a float32 or float16 tensor"))
            })
            .collect()
    }
}

/// The element type and batch-1 shape of the single float32 or float16 input of `session` (a
/// height or width not fixed: `imgsz`).
fn declared_input(
    session: &Session,
    imgsz: Option<usize>,
) -> anyhow::Result<(Precision, [usize; 4])> {
    let [input] = session.inputs() else {
        bail!(
            "the model has {} inputs; shears runs single-input image models",
            session.inputs().len()
        );
    };
    let name = input.name();
    let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
        bail!("input `{name}` is not a tensor");
    };
    let precision = match ty {
        TensorElementType::Float32 => Precision::F32,
        TensorElementType::Float16 => Precision::F16,
        _ => bail!("input `{name}` is {ty}; shears feeds float32 or float16 images"),
    };
    let dims: Vec<Option<usize>> = shape.iter().map(|&d| usize::try_from(d).ok()).collect();
    Ok((precision, batch1_shape(name, &dims, imgsz)?))
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "ort"
    }

    fn provider(&self) -> &str {
        self.provider
    }

    fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    fn run(&mut self, input: ArrayView4<'_, f32>) -> anyhow::Result<ArrayD<f32>> {
        self.outputs(input, 1)?
            .pop()
            .context("the model has no outputs")
    }

    fn run_all(&mut self, input: ArrayView4<'_, f32>) -> anyhow::Result<Vec<ArrayD<f32>>> {
        self.outputs(input, usize::MAX)
    }
}
