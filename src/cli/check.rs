//! `shears check MODEL`: decode, re-encode in memory, and say whether the bytes are identical.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use prost::Message;

use super::common::load_model;
use super::ui::Ui;
use shears::onnx::proto::ModelProto;

/// Check that a model survives decoding and re-encoding byte for byte.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ONNX model files.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
}

/// Exit code 0 when every model round-trips byte-identical, 1 when one does not, 2 when one
/// cannot be read: each file is reported and the batch goes on.
pub fn run(args: &Args, ui: &Ui) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut all_identical = true;
    let mut unreadable = 0;
    for path in &args.models {
        let model = match load_model(path, ui) {
            Ok(model) => model,
            Err(err) => {
                ui.error(format_args!("{err:#}"));
                unreadable += 1;
                continue;
            }
        };
        // Compare on the file's own bytes: external data references stay references.
        let reencoded = ModelProto::decode(model.bytes.clone())?.encode_to_vec();
        let identical = reencoded == model.bytes[..];
        all_identical &= identical;
        let p = &model.proto;
        let g = model.graph();
        let opsets: Vec<String> = p
            .opset_import
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    if o.domain().is_empty() {
                        "ai.onnx"
                    } else {
                        o.domain()
                    },
                    o.version()
                )
            })
            .collect();
        writeln!(
            out,
            "{}: round trip {} ({} bytes{})",
            path.display(),
            if identical {
                "byte-identical"
            } else {
                "DIFFERS"
            },
            model.bytes.len(),
            if identical {
                String::new()
            } else {
                format!(", re-encoded {} bytes", reencoded.len())
            }
        )?;
        writeln!(
            out,
            "  IR version {}, opsets {}, producer {} {}",
            p.ir_version(),
            opsets.join(", "),
            p.producer_name(),
            p.producer_version()
        )?;
        let sparse_constants = g
            .node
            .iter()
            .filter(|n| {
                n.op_type() == "Constant" && n.attribute.iter().any(|a| a.name() == "sparse_value")
            })
            .count();
        writeln!(
            out,
            "  {} nodes, {} initializers, {} sparse initializers, {} sparse Constant nodes{}",
            g.node.len(),
            g.initializer.len(),
            g.sparse_initializer.len(),
            sparse_constants,
            if model.had_external_data() {
                ", external data"
            } else {
                ""
            }
        )?;
    }
    if unreadable > 0 {
        bail!(
            "{unreadable} of {} models could not be read",
            args.models.len()
        );
    }
    Ok(if all_identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
