//! Every path a command writes is distinct from its inputs and from its other outputs, is a
//! regular file or new, gets the usual permissions, and is written with the rest or not at all.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{error_exit, scratch, shears, small_yolov5n, succeed};

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
    small_yolov5n(d, "model.onnx");
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
    small_yolov5n(d, "model.onnx");
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
    small_yolov5n(d, "model.onnx");
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
    small_yolov5n(d, "model.onnx");
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

/// Writes `text` to `dir/name`.
fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn no_output_is_any_file_the_command_reads() {
    let Some(model) = crate::common::fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    std::fs::copy(&model, d.join("model.onnx")).unwrap();
    if crate::common::small_dataset(d, 2).is_none() {
        return;
    }
    let first_image = {
        let mut images: Vec<String> = std::fs::read_dir(d.join("ds/images"))
            .unwrap()
            .map(|e| format!("ds/images/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        images.sort();
        images.remove(0)
    };
    let first_label = first_image
        .replace("images", "labels")
        .replace(".jpg", ".txt");
    let prune = ["prune", "model.onnx", "--amount", "0.3"];
    let search = [
        "prune",
        "model.onnx",
        "--max-map-drop",
        "0.01",
        "--data",
        "ds.yaml",
    ];
    let calibrated = [
        "prune",
        "model.onnx",
        "--amount",
        "0.3",
        "--recover",
        "stats",
        "--calib",
        "ds.yaml",
    ];
    let with = |base: &[&str], extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        // each of these once overwrote the file it names with exit code 0
        (with(&search, &["-o", "ds.yaml"]), "is the --data".into()),
        (
            with(&search, &["-o", "out.onnx", "--recipe", "ds.yaml"]),
            "--recipe ds.yaml is the --data".into(),
        ),
        (
            with(&prune, &["--method", "channel", "--verify-data", "ds.yaml"])
                .into_iter()
                .chain(["-o".into(), "ds.yaml".into()])
                .collect(),
            "is the --verify-data file".into(),
        ),
        (
            with(&calibrated, &["-o", "ds.yaml"]),
            "is the calibration file".into(),
        ),
        // and these read files besides the YAMLs
        (
            with(&calibrated, &["-o", &first_image]),
            "is the calibration file".into(),
        ),
        (
            with(&search, &["-o", "out.onnx", "--json", &first_label]),
            "is the validation file".into(),
        ),
        (
            vec![
                "val".into(),
                "model.onnx".into(),
                "--data".into(),
                "ds.yaml".into(),
                "--json".into(),
                first_image.clone(),
            ],
            "is the validation file".into(),
        ),
    ];
    for (args, needle) in cases {
        refused(
            d,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &needle,
        );
    }
    // a sweep and a sensitivity run whose data YAML has the name of one of their outputs
    std::fs::create_dir_all(d.join("sw")).unwrap();
    let moved_yaml = std::fs::read_to_string(d.join("ds.yaml"))
        .unwrap()
        .replace("path: ds", &format!("path: {}", d.join("ds").display()));
    for name in ["sweep.md", "sensitivity.md"] {
        std::fs::write(d.join("sw").join(name), &moved_yaml).unwrap();
    }
    refused(
        d,
        &[
            "sweep",
            "model.onnx",
            "--data",
            "sw/sweep.md",
            "--methods",
            "layer",
            "--amounts",
            "0.3",
            "-o",
            "sw",
        ],
        "is the validation file",
    );
    refused(
        d,
        &[
            "sensitivity",
            "model.onnx",
            "--data",
            "sw/sensitivity.md",
            "--include",
            "model.0/",
            "-o",
            "sw",
        ],
        "is the validation file",
    );
    // a pipeline whose output is its validation data or a calibration image
    let pipeline = write_file(
        d,
        "p.yaml",
        "models: [model.onnx]\npasses:\n  - prune_magnitude: {amount: 0.3}\noutput: ds.yaml\n\
         validate:\n  data: ds.yaml\n  max_map_drop: 0.5\n",
    );
    refused(
        d,
        &["run", pipeline.to_str().unwrap()],
        "is the file read by the pipeline",
    );
    let pipeline = write_file(
        d,
        "q.yaml",
        &format!(
            "models: [model.onnx]\npasses:\n  - prune_magnitude: {{amount: 0.3, recover: stats}}\n\
             output: {first_image}\ncalibration:\n  data: ds.yaml\n"
        ),
    );
    refused(
        d,
        &["run", pipeline.to_str().unwrap()],
        "is the file read by the pipeline",
    );
}

#[test]
fn a_later_run_removes_the_temporary_files_a_killed_run_left() {
    let dir = scratch();
    let d = dir.path();
    let model = small_yolov5n(d, "model.onnx");
    // The pid of a process that has ended, and one that runs (this test).
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let stale = d.join(format!(".shears-{dead}-out.onnx-a1B2c3"));
    let kept = [
        format!(".shears-{live}-out.onnx-a1B2c3"), // a run still writing
        format!(".shears-{dead}-other.onnx-a1B2c3"), // another output's
        format!(".shears-{dead}-out.onnx.data-a1B2c3"),
        "shears-out.onnx".to_string(),
    ];
    for name in kept.iter().map(String::as_str).chain([".shears-x"]) {
        std::fs::write(d.join(name), b"partial").unwrap();
    }
    std::fs::write(&stale, b"partial").unwrap();
    succeed(
        shears()
            .current_dir(d)
            .arg("prune")
            .arg(&model)
            .args(["--amount", "0.3", "-o", "out.onnx"]),
    );
    assert!(!stale.exists(), "the killed run's temporary file is left");
    for name in &kept {
        assert!(d.join(name).exists(), "{name} was removed");
    }
    let leftovers: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".shears-") && !kept.contains(n) && n != ".shears-x")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
