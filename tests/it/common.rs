//! Shared test support: fixture paths, the oracle venv, running the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use shears::onnx::proto::ModelProto;

/// The fixture folder: `SHEARS_FIXTURES`, else `../shared/fixtures` from the repository root.
pub fn fixtures() -> PathBuf {
    match std::env::var_os("SHEARS_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    }
}

/// A fixture file, or `None` when it is absent outside CI (the test then skips).
/// Under CI (`CI` set) a missing fixture fails the test.
pub fn fixture(relative: &str) -> Option<PathBuf> {
    let path = fixtures().join(relative);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("fixture {} is missing (CI is set)", path.display());
    }
    eprintln!("skipping: fixture {} is missing", path.display());
    None
}

/// The Python of the oracle venv the test command creates, or `None` outside CI when absent.
pub fn oracle_python() -> Option<PathBuf> {
    let python = match std::env::var_os("SHEARS_ORACLE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    };
    if python.exists() {
        return Some(python);
    }
    if std::env::var_os("CI").is_some() {
        panic!("oracle python {} is missing (CI is set)", python.display());
    }
    eprintln!("skipping: oracle python {} is missing", python.display());
    None
}

/// Runs a Python oracle script with arguments; panics with its stderr when it fails.
pub fn run_python(python: &Path, script: &str, args: &[&str]) -> String {
    succeed(Command::new(python).arg("-c").arg(script).args(args))
}

/// Runs `command`, expecting an error: exit code 2 and `needle` in stderr, which it returns.
pub fn error_exit(command: &mut Command, needle: &str) -> String {
    let out = command.output().expect("start the command");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{command:?}: expected {needle:?} in: {stderr}"
    );
    stderr
}

/// Runs `command` and returns its stdout; panics with its stdout and stderr when it fails.
pub fn succeed(command: &mut Command) -> String {
    let out = command.output().expect("start the command");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    assert!(
        out.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `shears` binary built for these tests.
pub fn shears() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shears"))
}

/// A small generated YOLOv5n (64x64 input) written to `dir/name`; returns its path.
pub fn small_yolov5n(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    succeed(
        shears()
            .args(["synth", "yolov5n", "--imgsz", "64", "-o"])
            .arg(&path),
    );
    path
}

/// A fresh scratch folder removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

/// The first `n` coco128 images (by name) with their labels as a dataset of their own, in
/// `dir/ds` with its YAML `dir/ds.yaml`; `None` when the fixtures are absent outside CI.
pub fn small_dataset(dir: &Path, n: usize) -> Option<PathBuf> {
    let images = fixture("coco/coco128/images/train2017")?;
    let labels = fixtures().join("coco/coco128/labels/train2017");
    std::fs::create_dir_all(dir.join("ds/images")).unwrap();
    std::fs::create_dir_all(dir.join("ds/labels")).unwrap();
    let mut stems: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    for stem in stems.iter().take(n) {
        let (image, label) = (format!("{stem}.jpg"), format!("{stem}.txt"));
        std::fs::copy(images.join(&image), dir.join("ds/images").join(&image)).unwrap();
        if labels.join(&label).exists() {
            std::fs::copy(labels.join(&label), dir.join("ds/labels").join(&label)).unwrap();
        }
    }
    let names: Vec<String> = (0..80).map(|i| format!("c{i}")).collect();
    let yaml = dir.join("ds.yaml");
    std::fs::write(
        &yaml,
        format!("path: ds\nval: images\nnames: [{}]\n", names.join(", ")),
    )
    .unwrap();
    Some(yaml)
}

/// Largest difference between the outputs of two models, and the largest |output| of the first.
#[derive(Debug, Clone, Copy)]
pub struct OutputDiff {
    pub max_abs_diff: f64,
    pub max_abs: f64,
}

/// Runs `reference` and `candidate` with tract on batch-1 inputs uniform in [0, 1) from each of
/// `seeds`, comparing every output; a non-finite difference counts as infinite.
pub fn compare_outputs(
    reference: &ModelProto,
    candidate: &ModelProto,
    seeds: &[u64],
) -> anyhow::Result<OutputDiff> {
    let bytes =
        |m: &ModelProto| shears::backend::encode_runnable(m, shears::backend::Engine::Tract);
    let spec = shears::backend::BackendSpec::default();
    let mut a = shears::backend::open(&spec, &bytes(reference)?).context("reference model")?;
    let mut b = shears::backend::open(&spec, &bytes(candidate)?).context("candidate model")?;
    if a.input_shape() != b.input_shape() {
        anyhow::bail!(
            "input shapes differ: {:?} and {:?}",
            a.input_shape(),
            b.input_shape()
        );
    }
    let mut diff = OutputDiff {
        max_abs_diff: 0.0,
        max_abs: 0.0,
    };
    for &seed in seeds {
        let x = shears::backend::bench::random_input(a.input_shape(), seed);
        let (ya, yb) = (a.run_all(x.view())?, b.run_all(x.view())?);
        if ya.len() != yb.len() {
            anyhow::bail!("{} outputs against {}", ya.len(), yb.len());
        }
        for (i, (p, q)) in ya.iter().zip(&yb).enumerate() {
            if p.shape() != q.shape() {
                anyhow::bail!(
                    "output {i} has shape {:?} against {:?}",
                    q.shape(),
                    p.shape()
                );
            }
            for (u, v) in p.iter().zip(q) {
                let d = f64::from((u - v).abs());
                diff.max_abs_diff =
                    diff.max_abs_diff
                        .max(if d.is_nan() { f64::INFINITY } else { d });
                diff.max_abs = diff.max_abs.max(f64::from(u.abs()));
            }
        }
    }
    Ok(diff)
}

/// A [`shears::progress::Progress`] that records every call in a log shared with its children,
/// for checking what long work reports.
#[derive(Default)]
pub struct Recorder {
    log: std::sync::Arc<std::sync::Mutex<Vec<Call>>>,
    /// This place's number and nesting depth (the root is place 0, depth 0).
    place: usize,
    depth: usize,
    places: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// One call to a [`Recorder`] or one of its children.
#[derive(Debug, Clone)]
struct Call {
    place: usize,
    depth: usize,
    what: What,
}

#[derive(Debug, Clone)]
enum What {
    Start(String, Option<u64>),
    Advance(u64),
    Note(String),
    Finish,
}

/// One phase as a [`Recorder`] saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub label: String,
    pub total: Option<u64>,
    pub depth: usize,
    /// The steps advanced and the notes given while it was open.
    pub steps: u64,
    pub notes: Vec<String>,
    /// Indices in the log of its start and of its finish (`None`: never finished).
    pub started: usize,
    pub finished: Option<usize>,
}

impl Span {
    /// Whether `inner` is a deeper phase that started and finished while this one was open.
    pub fn holds(&self, inner: &Span) -> bool {
        inner.depth > self.depth
            && inner.started > self.started
            && matches!((inner.finished, self.finished), (Some(i), Some(o)) if i < o)
    }
}

impl Recorder {
    /// Every phase in the order they started.
    pub fn spans(&self) -> Vec<Span> {
        let log = self.log.lock().unwrap();
        let mut spans: Vec<Span> = Vec::new();
        // the open span of each place
        let mut open: std::collections::HashMap<usize, usize> = Default::default();
        for (index, call) in log.iter().enumerate() {
            let current = open.get(&call.place).copied();
            match &call.what {
                What::Start(label, total) => {
                    open.insert(call.place, spans.len());
                    spans.push(Span {
                        label: label.clone(),
                        total: *total,
                        depth: call.depth,
                        steps: 0,
                        notes: Vec::new(),
                        started: index,
                        finished: None,
                    });
                }
                What::Advance(n) => {
                    let span = current.expect("advance outside a phase");
                    spans[span].steps += n;
                }
                What::Note(note) => {
                    let span = current.expect("note outside a phase");
                    spans[span].notes.push(note.clone());
                }
                What::Finish => {
                    let span = current.expect("finish outside a phase");
                    spans[span].finished = Some(index);
                    open.remove(&call.place);
                }
            }
        }
        spans
    }

    /// The one phase labelled `label`.
    pub fn span(&self, label: &str) -> Span {
        let spans = self.spans();
        let found: Vec<&Span> = spans.iter().filter(|s| s.label == label).collect();
        assert_eq!(found.len(), 1, "one phase {label:?} in {spans:#?}");
        found[0].clone()
    }

    fn record(&self, what: What) {
        self.log.lock().unwrap().push(Call {
            place: self.place,
            depth: self.depth,
            what,
        });
    }
}

impl shears::progress::Progress for Recorder {
    fn start(&self, label: &str, total: Option<u64>) {
        self.record(What::Start(label.to_string(), total));
    }
    fn advance(&self, n: u64) {
        self.record(What::Advance(n));
    }
    fn finish(&self) {
        self.record(What::Finish);
    }
    fn note(&self, detail: &str) {
        self.record(What::Note(detail.to_string()));
    }
    fn child(&self) -> Box<dyn shears::progress::Progress + '_> {
        let place = 1 + self
            .places
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::new(Recorder {
            log: self.log.clone(),
            place,
            depth: self.depth + 1,
            places: self.places.clone(),
        })
    }
}
