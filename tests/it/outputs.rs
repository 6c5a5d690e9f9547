//! Every path a command writes is distinct from its inputs and from its other outputs, is a
//! regular file or new, gets the usual permissions, and is written with the rest or not at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{error_exit, scratch, shears, succeed};

/// A small generated YOLOv5n (64x64 input) at `dir/model.onnx`.
fn small_model(dir: &Path) -> PathBuf {
    let path = dir.join("model.onnx");
    succeed(
        shears()
            .args(["synth", "yolov5n", "--imgsz", "64", "-o"])
            .arg(&path),
    );
    path
}

/// Every entry of `dir` with its bytes (or link target), to compare before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut entries: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
                    .into_bytes()
            } else if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                format!("{:?}", meta.file_type()).into_bytes()
            };
            (path, content)
        })
        .collect();
    entries.sort();
    entries
}

/// `shears args` fails with exit code 2 and `needle`, and `dir` is exactly as before.
fn refused(dir: &Path, args: &[&str], needle: &str) {
    let before = snapshot(dir);
    error_exit(shears().current_dir(dir).args(args), needle);
    assert_eq!(snapshot(dir), before, "{args:?} changed the folder");
}

#[test]
fn written_paths_are_distinct_from_inputs_and_each_other() {
    let dir = scratch();
    let d = dir.path();
    small_model(d);
    let prune = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["prune", "model.onnx", "--amount", "0.3", "-o", "out.onnx"]
            .map(String::from)
            .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let cases: [(&[&str], &str); 8] = [
        (
            &["--json", "model.onnx"],
            "--json model.onnx is the input model",
        ),
        (&["--json", "./out.onnx"], "name the same file"),
        (
            &["--external-data", "model.onnx"],
            "--external-data model.onnx is the input model",
        ),
        (&["--external-data", "out.onnx"], "name the same file"),
        (&["--external-data", "../x.bin"], "relative path inside"),
        (&["--external-data", "/tmp/x.bin"], "relative path inside"),
        (
            &["--method", "channel", "--emit-masked", "model.onnx"],
            "--emit-masked model.onnx is the input model",
        ),
        (
            &["--method", "channel", "--emit-masked", "out.onnx"],
            "name the same file",
        ),
    ];
    for (extra, needle) in cases {
        let args = prune(extra);
        refused(
            d,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            needle,
        );
    }
    // the same file through a hard link is still the input
    std::fs::hard_link(d.join("model.onnx"), d.join("linked.onnx")).unwrap();
    refused(
        d,
        &[
            "prune",
            "model.onnx",
            "--amount",
            "0.3",
            "-o",
            "linked.onnx",
        ],
        "is the input model",
    );
    refused(
        d,
        &[
            "cocoeval",
            "--gt",
            "model.onnx",
            "--dt",
            "linked.onnx",
            "--json",
            "model.onnx",
        ],
        "--json model.onnx is the --gt",
    );
    refused(
        d,
        &[
            "val",
            "model.onnx",
            "--data",
            "data.yaml",
            "--json",
            "linked.onnx",
        ],
        "--json linked.onnx is the model model.onnx",
    );
    refused(
        d,
        &["bench", "model.onnx", "--json", "model.onnx"],
        "is the model",
    );
}

#[test]
fn outputs_never_replace_links_fifos_or_devices() {
    let dir = scratch();
    let d = dir.path();
    small_model(d);
    std::fs::write(d.join("target.txt"), b"kept").unwrap();
    std::os::unix::fs::symlink("target.txt", d.join("link.onnx")).unwrap();
    let fifo = d.join("fifo.onnx");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let prune_to = |out: &str, needle: &str| {
        refused(
            d,
            &["prune", "model.onnx", "--amount", "0.3", "-o", out],
            needle,
        )
    };
    prune_to("link.onnx", "is a symbolic link");
    prune_to("fifo.onnx", "not a regular file");
    prune_to(".", "is a directory");
    refused(
        d,
        &["synth", "yolov5n", "--imgsz", "64", "-o", "link.onnx"],
        "is a symbolic link",
    );
    refused(
        d,
        &[
            "prune",
            "model.onnx",
            "--amount",
            "0.3",
            "-o",
            "out.onnx",
            "--json",
            "fifo.onnx",
        ],
        "not a regular file",
    );
    // A device node: refused before anything is written (as root this once replaced /dev/null).
    error_exit(
        shears()
            .current_dir(d)
            .args(["prune", "model.onnx", "--amount", "0.3", "-o", "/dev/null"]),
        "not a regular file",
    );
    let null = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &null.file_type()
    ));
}

#[test]
fn outputs_get_the_permissions_of_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch();
    let d = dir.path();
    small_model(d);
    for (umask, mode) in [("022", 0o644), ("077", 0o600), ("002", 0o664)] {
        let script = format!(
            "umask {umask} && exec \"$0\" prune model.onnx --amount 0.3 -o out{umask}.onnx \
             --external-data w{umask}.bin --json r{umask}.json"
        );
        let status = Command::new("sh")
            .current_dir(d)
            .args(["-c", &script, env!("CARGO_BIN_EXE_shears")])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        for name in [
            format!("out{umask}.onnx"),
            format!("w{umask}.bin"),
            format!("r{umask}.json"),
        ] {
            let got = std::fs::metadata(d.join(&name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(got, mode, "{name} under umask {umask}: {got:o}");
        }
    }
    // and nothing else: no temporary file is left behind
    let names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1 + 3 * 3, "{names:?}");
}

#[test]
fn a_pipeline_never_writes_over_a_model_it_reads() {
    let dir = scratch();
    let d = dir.path();
    small_model(d);
    std::fs::write(
        d.join("p.yaml"),
        "models: [model.onnx]\npasses:\n  - prune_magnitude: {amount: 0.3}\noutput: '{stem}.onnx'\n",
    )
    .unwrap();
    refused(
        d,
        &["run", "p.yaml"],
        "output model.onnx is the input model",
    );
    std::fs::write(
        d.join("q.yaml"),
        "models: [model.onnx]\npasses:\n  - prune_magnitude: {amount: 0.3}\noutput: q.yaml\n",
    )
    .unwrap();
    refused(d, &["run", "q.yaml"], "output q.yaml is the pipeline");
}
