//! Loading a model: memory-map, decode, sanity-check, find what the schema does not cover, and
//! bring external tensor data in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use prost::Message;

use super::proto::ModelProto;
use super::schema::{self, SchemaFinding};
use super::{external, mapping};

/// A decoded model and what is known about where it came from.
#[derive(Debug, Clone)]
pub struct Model {
    /// The model. Tensors that lived in external data files are inlined (`raw_data` set).
    pub proto: ModelProto,
    /// The `.onnx` file it was read from.
    pub path: PathBuf,
    /// The bytes of that file, exactly as read (memory-mapped).
    pub bytes: Bytes,
    /// The external data files its tensors came from (memory-mapped), in order of first use.
    pub external_data: Vec<Bytes>,
    /// The paths of those files, in the same order.
    pub external_files: Vec<PathBuf>,
    /// Fields this schema does not know, or an IR version newer than it: re-encoding loses or
    /// changes something, so writers refuse unless forced.
    pub schema_findings: Vec<SchemaFinding>,
}

impl Model {
    /// Size in bytes of the `.onnx` file (external data not included).
    pub fn file_size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Size in bytes of the `.onnx` file and its external data files.
    pub fn total_size(&self) -> u64 {
        self.file_size()
            + self
                .external_data
                .iter()
                .map(|d| d.len() as u64)
                .sum::<u64>()
    }

    /// Whether any tensor came from an external data file.
    pub fn had_external_data(&self) -> bool {
        !self.external_data.is_empty()
    }

    /// The graph, which every model loaded through [`load`] has.
    pub fn graph(&self) -> &super::proto::GraphProto {
        self.proto
            .graph
            .as_ref()
            .expect("load() rejects models without a graph")
    }
}

/// Loads an ONNX model file. Errors name the file and say what is wrong with it.
pub fn load(path: &Path) -> Result<Model> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read metadata of {}", path.display()))?;
    if metadata.is_dir() {
        bail!("{} is a directory, not an ONNX model", path.display());
    }
    if !metadata.is_file() {
        bail!(
            "{} is not a regular file (a device, FIFO or socket), not an ONNX model",
            path.display()
        );
    }
    let len = metadata.len();
    if len == 0 {
        bail!("{} is empty, not an ONNX model", path.display());
    }
    let bytes = mapping::map_file(&file)
        .with_context(|| format!("cannot memory-map {}", path.display()))?;
    load_bytes(bytes, path)
}

/// Decodes a model from bytes; `path` names it in messages and anchors external data files.
pub fn load_bytes(bytes: Bytes, path: &Path) -> Result<Model> {
    if bytes.starts_with(ZIP_MAGIC) {
        bail!(
            "{} is a zip archive, as a PyTorch checkpoint (.pt) is, not an ONNX model: export it \
             to ONNX first (YOLOv5: `python export.py --weights {} --include onnx`)",
            path.display(),
            path.display()
        );
    }
    let mut proto = ModelProto::decode(bytes.clone()).with_context(|| {
        format!(
            "{} is not a valid ONNX model (protobuf decoding failed)",
            path.display()
        )
    })?;
    check_looks_like_onnx(&proto, path)?;
    let schema_findings = schema::findings(&bytes, &proto)
        .with_context(|| format!("cannot scan {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let (external_files, external_data) = external::inline_all(&mut proto, base)
        .with_context(|| format!("cannot load the external data of {}", path.display()))?
        .into_iter()
        .unzip();
    Ok(Model {
        proto,
        path: path.to_path_buf(),
        bytes,
        external_data,
        external_files,
        schema_findings,
    })
}

/// How a zip archive starts: PyTorch checkpoints are zip archives; an ONNX model, whose first
/// field is its IR version, starts with byte 0x08.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Protobuf decoding accepts many non-ONNX byte strings; an ONNX model has an IR version, an
/// operator set and a graph.
fn check_looks_like_onnx(proto: &ModelProto, path: &Path) -> Result<()> {
    let ir = proto.ir_version.unwrap_or(0);
    if ir <= 0 || proto.graph.is_none() || (ir >= 3 && proto.opset_import.is_empty()) {
        bail!(
            "{} is not an ONNX model (IR version {ir}, {} operator sets, graph {})",
            path.display(),
            proto.opset_import.len(),
            if proto.graph.is_some() {
                "present"
            } else {
                "missing"
            }
        );
    }
    Ok(())
}
