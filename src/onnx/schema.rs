//! What this schema does not cover in a model file: unknown fields (which prost would drop on
//! re-encoding) and IR versions newer than the schema.
//!
//! The scan walks the protobuf wire format against the descriptor of `proto/onnx.proto`, embedded
//! at build time, so it sees exactly the fields a decode would discard.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use anyhow::{Result, bail};
use prost::Message;
use prost_types::field_descriptor_proto::Type;

use super::proto::ModelProto;

/// The newest IR version `proto/onnx.proto` describes.
pub const SCHEMA_IR_VERSION: i64 = 11;

/// Something in a model that re-encoding with this schema would lose or misrepresent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaFinding(pub String);

impl fmt::Display for SchemaFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// At most this many unknown-field sites are listed; the rest are counted.
const MAX_LISTED: usize = 8;

/// Scans the encoded model `bytes` (already decoded into `proto`).
pub fn findings(bytes: &[u8], proto: &ModelProto) -> Result<Vec<SchemaFinding>> {
    let mut out = Vec::new();
    let ir = proto.ir_version.unwrap_or(0);
    if ir > SCHEMA_IR_VERSION {
        out.push(SchemaFinding(format!(
            "IR version {ir} is newer than the schema shears knows ({SCHEMA_IR_VERSION})"
        )));
    }
    let mut unknown = Vec::new();
    walk(bytes, ".onnx.ModelProto", "ModelProto", &mut unknown)?;
    let total = unknown.len();
    unknown.sort();
    unknown.dedup();
    for site in unknown.iter().take(MAX_LISTED) {
        out.push(SchemaFinding(format!("unknown field {site}")));
    }
    if unknown.len() > MAX_LISTED {
        out.push(SchemaFinding(format!(
            "... {} more unknown field sites",
            unknown.len() - MAX_LISTED
        )));
    }
    if total > 0 {
        out.push(SchemaFinding(format!(
            "{total} unknown fields in all would be dropped by re-encoding"
        )));
    }
    Ok(out)
}

/// Field number -> (field name, message type name when the field is a message).
type Fields = HashMap<u32, (String, Option<String>)>;

/// Message full name (".onnx.ModelProto") -> its fields.
fn schema() -> &'static HashMap<String, Fields> {
    static SCHEMA: OnceLock<HashMap<String, Fields>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/onnx_descriptor.bin"));
        let set = prost_types::FileDescriptorSet::decode(&bytes[..])
            .expect("the descriptor set embedded at build time decodes");
        let mut messages = HashMap::new();
        for file in &set.file {
            let prefix = format!(".{}", file.package());
            for message in &file.message_type {
                collect(&prefix, message, &mut messages);
            }
        }
        messages
    })
}

fn collect(
    prefix: &str,
    message: &prost_types::DescriptorProto,
    out: &mut HashMap<String, Fields>,
) {
    let name = format!("{prefix}.{}", message.name());
    let fields = message
        .field
        .iter()
        .map(|f| {
            let nested = (f.r#type() == Type::Message).then(|| f.type_name().to_string());
            (f.number() as u32, (f.name().to_string(), nested))
        })
        .collect();
    for nested in &message.nested_type {
        collect(&name, nested, out);
    }
    out.insert(name, fields);
}

/// Walks one encoded message of type `type_name`; pushes "path: #number" for unknown fields.
fn walk(mut buf: &[u8], type_name: &str, path: &str, unknown: &mut Vec<String>) -> Result<()> {
    let Some(fields) = schema().get(type_name) else {
        return Ok(());
    };
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let (number, wire_type) = ((key >> 3) as u32, (key & 7) as u8);
        let payload = match wire_type {
            0 => {
                read_varint(&mut buf)?;
                None
            }
            1 => Some(take(&mut buf, 8)?),
            2 => {
                let len = read_varint(&mut buf)? as usize;
                Some(take(&mut buf, len)?)
            }
            5 => Some(take(&mut buf, 4)?),
            other => bail!("unsupported wire type {other} in {path}"),
        };
        match fields.get(&number) {
            None => unknown.push(format!("{path}: #{number}")),
            Some((name, Some(nested))) if wire_type == 2 => walk(
                payload.unwrap_or_default(),
                nested,
                &format!("{path}.{name}"),
                unknown,
            )?,
            Some(_) => {}
        }
    }
    Ok(())
}

fn read_varint(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = buf.split_first() else {
            bail!("truncated varint")
        };
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("varint longer than 10 bytes")
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Result<&'a [u8]> {
    if buf.len() < len {
        bail!(
            "truncated field ({len} bytes announced, {} left)",
            buf.len()
        );
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_with_graph() -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            graph: Some(Default::default()),
            ..Default::default()
        }
    }

    #[test]
    fn known_fields_give_no_findings() {
        let model = model_with_graph();
        assert!(findings(&model.encode_to_vec(), &model).unwrap().is_empty());
    }

    #[test]
    fn unknown_field_in_nested_message_is_found() {
        let model = model_with_graph();
        let mut bytes = model.encode_to_vec();
        // An extra varint field #99 at the top level: key = 99 << 3 | 0, then value 1.
        bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
        let found = findings(&bytes, &model).unwrap();
        assert!(found[0].0.contains("ModelProto: #99"), "{found:?}");
    }

    #[test]
    fn newer_ir_version_is_found() {
        let mut model = model_with_graph();
        model.ir_version = Some(SCHEMA_IR_VERSION + 1);
        let found = findings(&model.encode_to_vec(), &model).unwrap();
        assert!(found[0].0.contains("newer"), "{found:?}");
    }
}
