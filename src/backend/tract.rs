//! The tract backend: pure Rust, on the CPU, on as many threads as the spec asks for.
//!
//! Precondition: the model bytes hold no sparse initializers (tract-onnx does not read
//! `GraphProto.sparse_initializer`); shears densifies them before building a session.

use anyhow::{Context, bail};
use ndarray::{ArrayD, ArrayView4};
use tract_linalg::multithread::Executor;
use tract_onnx::pb::{self, tensor_proto, tensor_shape_proto::dimension, type_proto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::knobs;
use tract_onnx::tract_core::runtime::RunOptions;

use super::{Backend, BackendSpec, Precision, batch1_shape, check_input};
use crate::onnx::precision::widen_fp16;
use crate::onnx::proto::ModelProto;
use prost::Message;

/// An optimised tract plan with its input shape fixed to batch 1.
pub(super) struct TractBackend {
    state: TypedSimpleState,
    input_shape: [usize; 4],
    precision: Precision,
}

impl TractBackend {
    /// Parses the model, fixes the first input to its declared shape with batch 1 (a height or
    /// width not fixed: the spec's image size), optimises it and builds a plan that runs on the
    /// spec's threads.
    pub(super) fn new(model_bytes: &[u8], spec: &BackendSpec) -> anyhow::Result<Self> {
        let onnx = tract_onnx::onnx();
        let mut proto = onnx
            .proto_model_for_read(&mut &model_bytes[..])
            .context("tract could not decode the ONNX model")?;
        let name = first_input(&proto)?;
        let (precision, dims) = declared_input(&proto, &name)?;
        if precision == Precision::F16 {
            let wide = widened(model_bytes)?;
            proto = onnx
                .proto_model_for_read(&mut &wide[..])
                .context("tract could not decode the widened ONNX model")?;
        }
        let mut model = onnx
            .model_for_proto_model(&proto)
            .context("tract could not read the ONNX model")?;
        let inputs = model.input_outlets()?.len();
        if inputs != 1 {
            bail!("the model has {inputs} inputs; shears runs single-input image models");
        }
        let input_shape = batch1_shape(&name, &dims, spec.imgsz())?;
        model.set_input_fact(0, f32::fact(input_shape).into())?;
        let options = RunOptions {
            executor: Some(executor(spec.threads())?),
            ..RunOptions::default()
        };
        let plan = optimise(model)?
            .into_runnable_with_options(&options)
            .context("tract could not plan the model")?;
        let state = plan.spawn()?;
        Ok(Self {
            state,
            input_shape,
            precision,
        })
    }

    fn outputs(&mut self, input: ArrayView4<'_, f32>) -> anyhow::Result<TVec<TValue>> {
        check_input(self.input_shape, &input)?;
        let tensor: Tensor = match self.precision {
            Precision::F32 => input.to_owned().into(),
            Precision::F16 => input.mapv(|v| f16::from_f32(v).to_f32()).into(),
        };
        self.state
            .run(tvec!(tensor.into_tvalue()))
            .context("tract inference failed")
    }
}

/// Optimises a tract model with its input facts set, with the settings of shears' sessions
/// (`optimisation_knobs`).
pub fn optimise(model: InferenceModel) -> anyhow::Result<TypedModel> {
    optimisation_knobs()
        .enter(|| model.into_optimized())
        .context("tract could not optimise the model")
}

/// What runs a plan's parallel work (matrix products, element-wise ops, pooling): a pool of
/// `threads` threads of its own, or the calling thread alone for one.
fn executor(threads: usize) -> anyhow::Result<Executor> {
    if threads <= 1 {
        return Ok(Executor::SingleThread);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|index| format!("shears-tract-{index}"))
        .num_threads(threads)
        .build()
        .with_context(|| format!("could not start {threads} threads for tract"))?;
    Ok(Executor::MultiThread(std::sync::Arc::new(pool)))
}

/// The tract settings shears optimises models with: tract's direct spatial convolution off,
/// unless `TRACT_DISABLE_DIRECT_SPATIAL` is set in the environment.
///
/// tract picks that kernel for convolutions with at most 576 taps per output point and output
/// rows at least 128 wide; in a YOLOv5 at 640 these are the two stride-2 stem convs. On this
/// project's x86-64 machine (AVX2) it ran yolov5s's `model.1` at 2.5 GMAC/s against 15-26 for
/// tract's im2col convs; turning it off made a dense yolov5s inference about 25% faster and a
/// channel-pruned one about 15% (README, "Measured").
fn optimisation_knobs() -> knobs::KnobScope {
    if std::env::var_os(DIRECT_SPATIAL_KNOB).is_some() {
        return knobs::KnobScope::default();
    }
    // A tract without this knob keeps its own choice; a unit test notices it gone.
    direct_spatial_off().unwrap_or_default()
}

/// The tract knob that turns its direct spatial convolution off.
const DIRECT_SPATIAL_KNOB: &str = "TRACT_DISABLE_DIRECT_SPATIAL";

fn direct_spatial_off() -> TractResult<knobs::KnobScope> {
    knobs::KnobScope::new([(DIRECT_SPATIAL_KNOB, "true")])
}

/// The element type and declared dimensions of graph input `name` (`None` where not a fixed
/// size); float32 and float16 inputs only.
fn declared_input(
    proto: &pb::ModelProto,
    name: &str,
) -> anyhow::Result<(Precision, Vec<Option<usize>>)> {
    let value_info = proto
        .graph
        .as_ref()
        .and_then(|graph| graph.input.iter().find(|input| input.name == name))
        .with_context(|| format!("graph input `{name}` is not declared"))?;
    let Some(type_proto::Value::TensorType(tensor)) =
        value_info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        bail!("input `{name}` is not a tensor");
    };
    let precision = match tensor_proto::DataType::try_from(tensor.elem_type) {
        Ok(tensor_proto::DataType::Float) => Precision::F32,
        Ok(tensor_proto::DataType::Float16) => Precision::F16,
        _ => bail!(
            "input `{name}` has element type {}; shears feeds float32 or float16 images",
            tensor.elem_type
        ),
    };
    let shape = tensor
        .shape
        .as_ref()
        .with_context(|| format!("input `{name}` has no declared shape; expected [1, C, H, W]"))?;
    let dims = shape
        .dim
        .iter()
        .map(|dim| match dim.value {
            Some(dimension::Value::DimValue(size)) => usize::try_from(size).ok(),
            _ => None,
        })
        .collect();
    Ok((precision, dims))
}

/// The name of the first graph input that no initializer gives a value.
fn first_input(proto: &pb::ModelProto) -> anyhow::Result<String> {
    let graph = proto.graph.as_ref().context("the model has no graph")?;
    graph
        .input
        .iter()
        .map(|input| &input.name)
        .find(|name| graph.initializer.iter().all(|t| &t.name != *name))
        .cloned()
        .context("the model has no input")
}

/// The bytes of a FLOAT16 model computed in float32 ([`widen_fp16`]): tract's fp16 kernels
/// ran yolov5n about 100 times slower than its f32 ones on this project's x86-64 machine
/// (13.3 s against 0.12 s an image), so tract runs an fp16 model with its fp16 weights and
/// input values in f32 arithmetic.
fn widened(model_bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut model = ModelProto::decode(model_bytes).context("could not decode the ONNX model")?;
    widen_fp16(&mut model)?;
    Ok(crate::onnx::encode(&model))
}

/// An output as an owned float32 array; `index` names it in errors.
fn to_array(value: TValue, index: usize) -> anyhow::Result<ArrayD<f32>> {
    value
        .into_tensor()
        .into_plain_array::<f32>()
        .with_context(|| format!("output {index} is not a float32 tensor"))
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn provider(&self) -> &str {
        "tract"
    }

    fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    fn run(&mut self, input: ArrayView4<'_, f32>) -> anyhow::Result<ArrayD<f32>> {
        let first = self.outputs(input)?.into_iter().next();
        to_array(first.context("the model has no outputs")?, 0)
    }

    fn run_all(&mut self, input: ArrayView4<'_, f32>) -> anyhow::Result<Vec<ArrayD<f32>>> {
        let outputs = self.outputs(input)?;
        outputs
            .into_iter()
            .enumerate()
            .map(|(index, value)| to_array(value, index))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tract_still_has_the_direct_spatial_knob() {
        super::direct_spatial_off().unwrap();
    }
}
