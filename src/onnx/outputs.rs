//! Every file a command writes, checked before any work and put in place together.
//!
//! A command first declares what it reads ([`OutputPlan::input`], [`OutputPlan::input_model`])
//! and what it will write ([`OutputPlan::output`], [`OutputPlan::output_model`]); each output is
//! refused when it is one of the inputs (through any path or hard link), when two outputs name
//! the same file, or when it exists and is not a regular file (a symbolic link, FIFO, device or
//! folder is never replaced). The command then stages its files ([`OutputPlan::stage_model`],
//! [`OutputPlan::stage_bytes`]) as temporary files beside their destinations and calls
//! [`OutputPlan::commit`], which renames them all into place. A plan dropped before `commit`
//! (an error anywhere) removes its temporary files: nothing is written.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::proto::ModelProto;
use super::save::{self, SaveOptions, Saved, Staged};
use super::{Model, external};

/// One declared path: what it is for (a flag such as `--json`, or "input model"), as given, and
/// the file it resolves to.
#[derive(Debug)]
struct Declared {
    role: String,
    path: PathBuf,
    resolved: PathBuf,
    /// (device, inode) of an existing file: the same file under another name or a hard link.
    identity: Option<(u64, u64)>,
}

impl Declared {
    fn new(role: &str, path: &Path) -> Self {
        Declared {
            role: role.to_string(),
            path: path.to_path_buf(),
            resolved: resolve(path),
            identity: identity(path),
        }
    }

    fn same_file(&self, other: &Declared) -> bool {
        self.resolved == other.resolved
            || (self.identity.is_some() && self.identity == other.identity)
    }
}

/// The files of one command: what it reads, what it will write, and what it has staged.
#[derive(Debug, Default)]
pub struct OutputPlan {
    inputs: Vec<Declared>,
    outputs: Vec<Declared>,
    staged: Vec<Staged>,
}

impl OutputPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a file (or folder) the command reads; `role` names it in messages ("input
    /// model", "--gt"). Refused when an output declared before is the same file: inputs and
    /// outputs may be declared in any order.
    pub fn input(&mut self, role: &str, path: &Path) -> Result<()> {
        let declared = Declared::new(role, path);
        if let Some(output) = self.outputs.iter().find(|o| o.same_file(&declared)) {
            bail!(
                "{} {} is the {} {}; choose another path",
                output.role,
                output.path.display(),
                role,
                path.display()
            );
        }
        self.inputs.push(declared);
        Ok(())
    }

    /// Declares every file of `paths` as read, under one `role`.
    pub fn inputs<'p>(
        &mut self,
        role: &str,
        paths: impl IntoIterator<Item = &'p PathBuf>,
    ) -> Result<()> {
        paths.into_iter().try_for_each(|p| self.input(role, p))
    }

    /// Declares a loaded model and the external data files it came with.
    pub fn input_model(&mut self, model: &Model) -> Result<()> {
        self.input("input model", &model.path)?;
        self.inputs("external data of the input model", &model.external_files)
    }

    /// Declares a file the command will write. Refused when it is an input, another output, or
    /// an existing file that is not a regular file.
    pub fn output(&mut self, role: &str, path: &Path) -> Result<()> {
        let shown = || format!("{role} {}", path.display());
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                let kind = meta.file_type();
                let what = if kind.is_symlink() {
                    "a symbolic link"
                } else if kind.is_dir() {
                    "a directory"
                } else if !kind.is_file() {
                    "not a regular file (a device, FIFO or socket)"
                } else {
                    ""
                };
                if !what.is_empty() {
                    bail!(
                        "{} is {what}; shears only writes new files or replaces regular files",
                        shown()
                    );
                }
            }
            // a new file; a missing folder is reported when the file is staged
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot write {}", shown())),
        }
        let declared = Declared::new(role, path);
        if let Some(input) = self.inputs.iter().find(|i| i.same_file(&declared)) {
            bail!(
                "{} is the {} {}; choose another path",
                shown(),
                input.role,
                input.path.display()
            );
        }
        if let Some(other) = self.outputs.iter().find(|o| o.same_file(&declared)) {
            bail!(
                "{} and {} {} name the same file; choose distinct paths",
                shown(),
                other.role,
                other.path.display()
            );
        }
        self.outputs.push(declared);
        Ok(())
    }

    /// Declares a model the command will write, with the external data file `options` names
    /// (which must be a relative path inside the model's folder).
    pub fn output_model(&mut self, role: &str, path: &Path, options: &SaveOptions) -> Result<()> {
        self.output(role, path)?;
        if let Some(location) = &options.external_data {
            let folder = path.parent().unwrap_or(Path::new(""));
            let data = external::data_file_path(folder, location)
                .with_context(|| format!("--external-data of {role} {}", path.display()))?;
            self.output("--external-data", &data)?;
        }
        Ok(())
    }

    /// Writes a declared model (and its external data) to temporary files.
    pub fn stage_model(
        &mut self,
        model: &ModelProto,
        path: &Path,
        options: &SaveOptions,
    ) -> Result<Saved> {
        self.ensure_declared(path)?;
        let location = save::external_location(model, path, options)?;
        if let Some(location) = location.filter(|_| options.external_data.is_none()) {
            // data moved out because the model is over 2 GiB: check that path too
            let folder = path.parent().unwrap_or(Path::new(""));
            self.output(
                "automatic external data",
                &external::data_file_path(folder, &location)?,
            )?;
        }
        let (saved, files) = save::stage_model(model, path, options)?;
        self.staged.extend(files);
        Ok(saved)
    }

    /// Writes a declared file's bytes to a temporary file.
    pub fn stage_bytes(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.ensure_declared(path)?;
        self.staged.push(save::stage_bytes(path, bytes)?);
        Ok(())
    }

    /// Writes `value` as pretty JSON, with a final newline, to a declared file's temporary file.
    pub fn stage_json(&mut self, path: &Path, value: &impl serde::Serialize) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(value)?;
        text.push(b'\n');
        self.stage_bytes(path, &text)
    }

    /// Opens a staged file for reading (to measure what is about to be written).
    pub fn open_staged(&self, path: &Path) -> Result<File> {
        self.staged
            .iter()
            .rev()
            .find(|s| s.destination() == path)
            .with_context(|| format!("{} was not staged", path.display()))?
            .reopen()
    }

    /// Puts every staged file in place, in the order staged.
    pub fn commit(self) -> Result<()> {
        for file in self.staged {
            file.commit()?;
        }
        Ok(())
    }

    fn ensure_declared(&self, path: &Path) -> Result<()> {
        if !self.outputs.iter().any(|o| o.path == path) {
            bail!(
                "internal error: {} is written without being declared as an output",
                path.display()
            );
        }
        Ok(())
    }
}

/// The absolute path `path` names, with the part that exists resolved (symbolic links, `..`);
/// a file that does not exist yet resolves to its canonical folder plus its name.
fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            return rest.iter().rev().fold(canonical, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

#[cfg(unix)]
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_path: &Path) -> Option<(u64, u64)> {
    None
}
