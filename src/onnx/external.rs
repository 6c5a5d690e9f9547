//! External tensor data: ONNX files over 2 GB keep tensor bytes in side files named by each
//! tensor's `external_data` entries (`location`, `offset`, `length`).
//!
//! Loading inlines them (`raw_data` becomes a zero-copy slice of the memory-mapped data file);
//! saving can move large tensors out again ([`externalize`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use super::proto::tensor_proto::DataLocation;
use super::proto::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};

/// Tensors at least this large go to the data file when saving with external data.
const EXTERNAL_MIN_BYTES: usize = 1024;
/// Offsets in the data file are aligned so each tensor can be memory-mapped on its own.
const ALIGN: u64 = 4096;

/// Calls `f` on every tensor of the model: initializers, sparse initializers and tensors held in
/// node attributes, in subgraphs too.
pub fn for_each_tensor_mut(
    model: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    fn graph(g: &mut GraphProto, f: &mut dyn FnMut(&mut TensorProto) -> Result<()>) -> Result<()> {
        for t in &mut g.initializer {
            f(t)?;
        }
        for s in &mut g.sparse_initializer {
            s.values
                .iter_mut()
                .chain(s.indices.iter_mut())
                .try_for_each(&mut *f)?;
        }
        for node in &mut g.node {
            for a in &mut node.attribute {
                a.t.iter_mut()
                    .chain(a.tensors.iter_mut())
                    .try_for_each(&mut *f)?;
                for s in a
                    .sparse_tensor
                    .iter_mut()
                    .chain(a.sparse_tensors.iter_mut())
                {
                    s.values
                        .iter_mut()
                        .chain(s.indices.iter_mut())
                        .try_for_each(&mut *f)?;
                }
                for sub in a.g.iter_mut().chain(a.graphs.iter_mut()) {
                    graph(sub, f)?;
                }
            }
        }
        Ok(())
    }
    if let Some(g) = model.graph.as_mut() {
        graph(g, f)?;
    }
    Ok(())
}

/// Replaces every external reference by the data it points to. Returns the data files it read
/// (path and contents), in order of first use.
pub fn inline_all(model: &mut ModelProto, base: &Path) -> Result<Vec<(PathBuf, Bytes)>> {
    let mut files: HashMap<String, Bytes> = HashMap::new();
    let mut order = Vec::new();
    for_each_tensor_mut(model, &mut |t| {
        if t.data_location != Some(DataLocation::External as i32) {
            return Ok(());
        }
        let name = t.name().to_string();
        let entry = |key: &str| {
            t.external_data
                .iter()
                .find(|e| e.key() == key)
                .map(|e| e.value())
        };
        let location = entry("location")
            .with_context(|| format!("tensor {name:?} is external but names no location"))?
            .to_string();
        let offset = parse_number(entry("offset"), "offset", &name)?;
        let length = entry("length")
            .map(|v| parse_number(Some(v), "length", &name))
            .transpose()?;
        let data = match files.get(&location) {
            Some(data) => data.clone(),
            None => {
                let path = data_file_path(base, &location)?;
                let data = map_data_file(&path)?;
                files.insert(location.clone(), data.clone());
                order.push((path, data.clone()));
                data
            }
        };
        let end = length.map_or(data.len() as u64, |l| offset.saturating_add(l));
        if offset > end || end > data.len() as u64 {
            bail!(
                "tensor {name:?}: bytes {offset}..{end} lie beyond the end of {location} ({} bytes)",
                data.len()
            );
        }
        t.raw_data = Some(data.slice(offset as usize..end as usize));
        t.external_data.clear();
        t.data_location = None;
        Ok(())
    })?;
    Ok(order)
}

fn parse_number(value: Option<&str>, key: &str, tensor: &str) -> Result<u64> {
    value.map_or(Ok(0), |v| {
        v.parse()
            .with_context(|| format!("tensor {tensor:?}: external {key} {v:?} is not a number"))
    })
}

/// The path of an external data file, which must lie inside the model's folder (as onnx's
/// checker requires): `location` is relative and has no `..`, `.` or root component.
pub fn data_file_path(base: &Path, location: &str) -> Result<PathBuf> {
    let relative = Path::new(location);
    if location.is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!(
            "external data location {location:?} must be a relative path inside the model's folder"
        );
    }
    Ok(base.join(relative))
}

/// Maps an external data file.
fn map_data_file(path: &Path) -> Result<Bytes> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    super::mapping::map_file(&file).with_context(|| format!("cannot memory-map {}", path.display()))
}

/// Moves every tensor of at least [`EXTERNAL_MIN_BYTES`] into `data`, recording `location`.
pub fn externalize(model: &mut ModelProto, location: &str, data: &mut impl Write) -> Result<()> {
    let mut offset = 0u64;
    for_each_tensor_mut(model, &mut |t| {
        let Some(raw) = t.raw_data.take_if(|raw| raw.len() >= EXTERNAL_MIN_BYTES) else {
            return Ok(());
        };
        let padding = offset.next_multiple_of(ALIGN) - offset;
        data.write_all(&vec![0u8; padding as usize])?;
        offset += padding;
        data.write_all(&raw)?;
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value),
        };
        t.external_data = vec![
            entry("location", location.to_string()),
            entry("offset", offset.to_string()),
            entry("length", raw.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        offset += raw.len() as u64;
        Ok(())
    })
}
