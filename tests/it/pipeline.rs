//! YAML pipelines: strict parsing with located errors, model zoos, summaries, exit codes.

use std::path::Path;
use std::process::Command;

use crate::common::{
    Recorder, error_exit, fixture, fixtures, scratch, shears, small_yolov5n, succeed,
};

/// `shears run PATH EXTRA...` with the fixtures of this test run.
fn run_pipeline(path: &Path, extra: &[&str]) -> Command {
    let mut command = shears();
    command
        .arg("run")
        .arg(path)
        .args(extra)
        .env("SHEARS_FIXTURES", fixtures());
    command
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn malformed_pipelines_name_file_line_and_key() {
    let dir = scratch();
    let d = dir.path();
    let cases = [
        (
            "tab.yaml",
            "models:\n\t- a.onnx\npasses: []\noutput: x\n",
            "tab.yaml",
        ),
        (
            "unknown_key.yaml",
            "models: [a.onnx]\npasses:\n  - prune_magnitude: {amout: 0.3}\noutput: x\n",
            "did you mean `amount`?",
        ),
        (
            "unknown_pass.yaml",
            "models: [a.onnx]\npasses:\n  - prune_magnitud: {amount: 0.3}\noutput: x\n",
            "did you mean `prune_magnitude`?",
        ),
        (
            "wrong_type.yaml",
            "models: [a.onnx]\npasses:\n  - prune_magnitude: {amount: lots}\noutput: x\n",
            "amount",
        ),
        (
            "top_level.yaml",
            "models: [a.onnx]\npasses: []\noutputs: x\n",
            "did you mean `output`?",
        ),
        (
            "bad_amount.yaml",
            "models: [a.onnx]\npasses:\n  - prune_magnitude: {amount: 3}\noutput: x\n",
            "outside [0, 1]",
        ),
    ];
    for (name, text, needle) in cases {
        let path = write(d, name, text);
        let stderr = error_exit(&mut run_pipeline(&path, &[]), needle);
        assert!(stderr.contains(name), "{name}: the file is named: {stderr}");
    }
    // Type and key errors carry a line and column.
    error_exit(&mut run_pipeline(&d.join("wrong_type.yaml"), &[]), "line 3");
}

#[test]
fn a_zoo_run_survives_a_failing_model_and_writes_a_summary() {
    let Some(n) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let Some(s) = fixture("models/yolov5s_random_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let zoo = dir.path().join("zoo");
    std::fs::create_dir(&zoo).unwrap();
    std::fs::copy(&n, zoo.join("a_yolov5n.onnx")).unwrap();
    std::fs::copy(&s, zoo.join("b_yolov5s.onnx")).unwrap();
    std::fs::write(zoo.join("c_broken.onnx"), b"not a model").unwrap();
    let pipeline = write(
        dir.path(),
        "zoo.yaml",
        "models: ['zoo/*.onnx']\npasses:\n  - prune_magnitude: {amount: 0.3}\noutput: out/{stem}.onnx\nreport: out/summary\n",
    );
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let out = run_pipeline(&pipeline, &["--jobs", "2"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("out/a_yolov5n.onnx").exists());
    assert!(dir.path().join("out/b_yolov5s.onnx").exists());
    assert!(!dir.path().join("out/c_broken.onnx").exists());
    assert!(stdout.contains("FAILED"), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap(),
    )
    .unwrap();
    let models = summary["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);
    assert_eq!(models[0]["status"], "ok");
    assert_eq!(models[0]["report"]["before"]["params"], 1_867_405);
    assert_eq!(models[1]["report"]["before"]["params"], 7_225_885);
    assert_eq!(models[2]["status"], "failed");
    assert!(
        models[2]["error"]
            .as_str()
            .unwrap()
            .contains("c_broken.onnx")
    );
    let markdown = std::fs::read_to_string(dir.path().join("out/summary.md")).unwrap();
    assert!(
        markdown.contains("| a_yolov5n.onnx | prune_magnitude |"),
        "{markdown}"
    );
}

#[test]
fn the_guide_pipeline_reproduces_the_guides_sparsity() {
    if fixture("models/yolov5n_op12.onnx").is_none() {
        return;
    }
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/yolov5-guide-30.yaml");
    let dir = scratch();
    let report = dir.path().join("guide");
    succeed(&mut run_pipeline(
        &pipeline,
        &["--report", report.to_str().unwrap()],
    ));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.with_extension("json")).unwrap())
            .unwrap();
    let sparsity = summary["models"][0]["report"]["after"]["sparsity"]["global"]
        .as_f64()
        .unwrap();
    assert_eq!(format!("{sparsity:.3}"), "0.299");
}

#[test]
fn outputs_that_collide_are_refused_before_any_work() {
    let Some(n) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let pipeline = write(
        dir.path(),
        "collide.yaml",
        &format!(
            "models: ['{}', '{}']\npasses:\n  - prune_magnitude: {{amount: 0.3}}\noutput: same.onnx\n",
            n.display(),
            n.display()
        ),
    );
    error_exit(&mut run_pipeline(&pipeline, &[]), "would both be written");
    assert!(!dir.path().join("same.onnx").exists());
}

#[test]
fn the_demo_generates_its_model_when_the_fixtures_are_absent() {
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/demo.yaml");
    let dir = scratch();
    let report = dir.path().join("demo");
    succeed(
        shears()
            .arg("run")
            .arg(&pipeline)
            // The demo writes under target/demo, where an earlier run may have left it.
            .args(["--force", "--report", report.to_str().unwrap()])
            .env("SHEARS_FIXTURES", dir.path().join("no-fixtures-here")),
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.with_extension("json")).unwrap())
            .unwrap();
    let model = &summary["models"][0];
    assert_eq!(model["model"]["synth"]["variant"], "yolov5n", "{model}");
    let warnings = summary["warnings"].to_string();
    assert!(warnings.contains("pruned without recovery"), "{warnings}");
    let passes = &model["report"]["passes"];
    assert!(passes.to_string().contains("global"), "{passes}");
    assert!(!passes.to_string().contains("obs"), "{passes}");
    assert_eq!(model["report"]["before"]["params"], 1_867_405);
    assert!(model["validation"].is_null(), "no dataset, no validation");
    let output = std::path::PathBuf::from(model["output"].as_str().unwrap());
    assert!(output.ends_with("yolov5n-synth-pruned30.onnx") && output.exists());
}

#[test]
fn a_missing_dataset_root_names_the_pipeline_key_not_the_flag() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    // coco128.yaml's `path:` is a placeholder: without `data_root:` its root does not exist
    let pipeline = write(
        dir.path(),
        "no_root.yaml",
        &format!(
            "models: ['{}']\npasses:\n  - prune_magnitude: {{amount: 0.3}}\noutput: out/{{stem}}.onnx\n\
             validate:\n  data: '{}'\n",
            model.display(),
            fixtures().join("coco/coco128.yaml").display(),
        ),
    );
    let stderr = error_exit(
        &mut run_pipeline(&pipeline, &[]),
        "does not exist; give the dataset's folder as `data_root:`",
    );
    assert!(!stderr.contains("--data-root"), "{stderr}");
}

#[test]
fn a_validation_gate_fails_with_exit_code_1_when_the_drop_exceeds_the_budget() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let root = fixtures().join("coco/coco128");
    let dir = scratch();
    let pipeline = write(
        dir.path(),
        "gate.yaml",
        &format!(
            "models: ['{}']\npasses:\n  - prune_magnitude: {{amount: 0.3}}\noutput: out/{{stem}}.onnx\n\
             validate:\n  data: '{}'\n  data_root: '{}'\n  backend: tract\n  iou: 0.65\n  metric: map50_95\n  max_map_drop: 0.05\n",
            model.display(),
            fixtures().join("coco/coco128.yaml").display(),
            root.display()
        ),
    );
    let out = run_pipeline(&pipeline, &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("lost more accuracy than the pipeline's budget"),
        "{stderr}"
    );
    assert!(
        stdout.contains("GATE FAILED: map50_95 dropped by")
            && stdout.contains("more than the budget of 0.05")
            && stdout.contains("WARNING: lost more than half its map50_95"),
        "{stdout}"
    );
    for column in [
        "params",
        "non-zero params",
        "MACs",
        "budget",
        "latency pruned/dense",
    ] {
        assert!(stdout.contains(column), "{column} in: {stdout}");
    }
    // Magnitude pruning keeps every parameter and MAC, and zeroes 30% of the parameters.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("yolov5n_op12"))
        .unwrap();
    assert!(row.contains("1,867,405 -> 1,867,405"), "{row}");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap(),
    )
    .unwrap();
    let validation = &summary["models"][0]["validation"];
    // The official val.py numbers (REFERENCE.md): 0.3483 dense, 0.0906 after the guide's pruning.
    assert!(
        (validation["dense"]["map50_95"].as_f64().unwrap() - 0.3483).abs() < 0.003,
        "{validation}"
    );
    assert!(
        (validation["pruned"]["map50_95"].as_f64().unwrap() - 0.0906).abs() < 0.003,
        "{validation}"
    );
    assert!(
        validation["dense"]["speed_ms"]["inference"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The drop is positive when accuracy falls, and losing more than half of it is flagged.
    assert!(validation["drop"].as_f64().unwrap() > 0.2, "{validation}");
    assert_eq!(validation["lost_over_half"], true, "{validation}");
    assert_eq!(validation["max_drop"], 0.05, "{validation}");
    let latency = &validation["latency_ratio"];
    let (p10, median, p90) = (
        latency["p10"].as_f64().unwrap(),
        latency["median"].as_f64().unwrap(),
        latency["p90"].as_f64().unwrap(),
    );
    assert!(0.0 < p10 && p10 <= median && median <= p90, "{latency}");
    // Its text row shows the drop rounded as val.py prints: three significant digits.
    let drop = validation["drop"].as_f64().unwrap();
    assert!(
        row.contains(&format!(" {} ", shears::pipeline::significant3(drop))),
        "{row}"
    );
}

#[test]
fn a_validating_run_nests_each_models_phases_and_flags_a_halved_model() {
    let (Some(model), Some(images)) = (
        fixture("models/yolov5n_op12.onnx"),
        fixture("coco/coco128/images/train2017"),
    ) else {
        return;
    };
    let dir = scratch();
    // Three coco128 images and their labels, as a dataset of their own.
    let labels = fixtures().join("coco/coco128/labels/train2017");
    std::fs::create_dir_all(dir.path().join("ds/images")).unwrap();
    std::fs::create_dir_all(dir.path().join("ds/labels")).unwrap();
    for stem in ["000000000009", "000000000025", "000000000030"] {
        let (image, label) = (format!("{stem}.jpg"), format!("{stem}.txt"));
        std::fs::copy(
            images.join(&image),
            dir.path().join("ds/images").join(&image),
        )
        .unwrap();
        std::fs::copy(
            labels.join(&label),
            dir.path().join("ds/labels").join(&label),
        )
        .unwrap();
    }
    let names: Vec<String> = (0..80).map(|i| format!("c{i}")).collect();
    write(
        dir.path(),
        "ds.yaml",
        &format!("path: ds\nval: images\nnames: [{}]\n", names.join(", ")),
    );
    let pipeline = write(
        dir.path(),
        "halve.yaml",
        &format!(
            "models: ['{}']\npasses:\n  - prune_magnitude: {{amount: 0.3}}\noutput: out/{{stem}}.onnx\n\
             validate:\n  data: ds.yaml\n  backend: tract\n  iou: 0.65\n  metric: map50_95\n",
            model.display(),
        ),
    );
    let spec = shears::pipeline::load_spec(&pipeline).unwrap();
    let progress = Recorder::default();
    let run = shears::pipeline::run_pipeline(&spec, &pipeline, 1, false, &progress).unwrap();
    // One phase counts the models; the model's own phase runs inside it, and inside that its
    // dense validation, pruning and pruned validation, the validations counting three images.
    let models = progress.span("model");
    assert_eq!((models.depth, models.total, models.steps), (0, Some(1), 1));
    let spans = progress.spans();
    let inside: Vec<(&str, usize, Option<u64>, u64)> = spans
        .iter()
        .filter(|s| models.holds(s))
        .map(|s| (s.label.as_str(), s.depth, s.total, s.steps))
        .collect();
    let name = model.display().to_string();
    assert_eq!(
        inside,
        [
            (name.as_str(), 1, None, 0),
            ("yolov5n_op12", 2, Some(3), 3),
            ("pruning", 2, None, 0),
            ("yolov5n_op12", 2, Some(3), 3),
        ],
        "{spans:#?}"
    );
    assert!(
        spans.iter().all(|s| s.depth == 0 || models.holds(s)),
        "{spans:#?}"
    );
    let json = serde_json::to_value(&run).unwrap();
    let validation = &json["models"][0]["validation"];
    let (dense, pruned) = (
        validation["dense"]["map50_95"].as_f64().unwrap(),
        validation["pruned"]["map50_95"].as_f64().unwrap(),
    );
    // The guide's 30% per-layer cut takes yolov5n from 0.35 to 0.09 on coco128 (REFERENCE.md).
    assert!(pruned < dense / 2.0, "{validation}");
    assert_eq!(validation["lost_over_half"], true, "{validation}");
    let table = shears::pipeline::summary_table(&run, None);
    assert!(
        table.contains("ok (no budget set); WARNING: lost more than half its map50_95"),
        "{table}"
    );
    // summary.html: one page with the table and the two plots inline, nothing fetched or run
    let prefix = dir.path().join("out/summary");
    let mut plan = shears::onnx::OutputPlan::new();
    for path in shears::pipeline::summary_paths(&prefix) {
        plan.output("summary", &path).unwrap();
    }
    shears::pipeline::stage_summary(&run, &prefix, &mut plan).unwrap();
    plan.commit().unwrap();
    let html = std::fs::read_to_string(prefix.with_extension("html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for outside in ["http://", "https://", "<script", "<link", "<img", "@import"] {
        assert!(
            !html.to_lowercase().contains(outside),
            "{outside} in {html}"
        );
    }
    assert!(html.contains("<td>yolov5n_op12.onnx</td>"), "{html}");
    assert!(html.contains("<th>dense</th>"), "{html}");
    for value in ["dense", "pruned"] {
        let cell = shears::pipeline::significant3(validation[value]["map50_95"].as_f64().unwrap());
        assert!(
            html.contains(&format!("<td>{cell}</td>")),
            "{cell} not in {html}"
        );
    }
    assert_eq!(html.matches("<svg").count(), 2, "{html}");
    assert_eq!(html.matches("</svg>").count(), 2, "{html}");
}

#[test]
fn a_recovering_pass_calibrates_on_the_pipelines_calibration_block() {
    let Some(images) = fixture("coco/coco_extra_train/images/train2017") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    small_yolov5n(d, "n.onnx");
    let calib = d.join("calib");
    std::fs::create_dir(&calib).unwrap();
    for name in ["000000000790.jpg", "000000008193.jpg"] {
        std::os::unix::fs::symlink(images.join(name), calib.join(name)).unwrap();
    }
    let passes = "passes:\n  - prune_magnitude: {amount: 0.3, scope: global, recover: obs}\n";
    let missing = write(
        d,
        "missing.yaml",
        &format!("models: [n.onnx]\n{passes}output: out/{{stem}}.onnx\n"),
    );
    error_exit(
        &mut run_pipeline(&missing, &[]),
        "add a `calibration:` block",
    );
    let pipeline = write(
        d,
        "obs.yaml",
        &format!(
            "models: [n.onnx]\n{passes}output: out/{{stem}}.onnx\ncalibration:\n  data: calib\n  images: 2\n"
        ),
    );
    succeed(&mut run_pipeline(&pipeline, &[]));
    let model = shears::onnx::load(&d.join("out/n.onnx")).unwrap();
    let record = model
        .proto
        .metadata_props
        .iter()
        .find(|p| p.key() == shears::onnx::metadata::CALIBRATION_KEY)
        .expect("the calibration set is recorded");
    let record: serde_json::Value = serde_json::from_str(record.value()).unwrap();
    assert_eq!(record["images"], 2);
}

#[test]
fn a_yaml_error_says_what_is_wrong_once_in_the_authors_words() {
    let dir = scratch();
    let d = dir.path();
    let path = write(
        d,
        "dup.yaml",
        "models: [a.onnx]\nmodels: [b.onnx]\npasses: []\noutput: x\n",
    );
    let stderr = error_exit(
        &mut run_pipeline(&path, &[]),
        "dup.yaml: line 2 column 1: duplicate mapping key `models`",
    );
    assert_eq!(
        stderr.matches("duplicate mapping key").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("Policy"), "{stderr}");
    assert!(stderr.contains("2 | models: [b.onnx]"), "{stderr}");
    // A data YAML too.
    small_yolov5n(d, "n.onnx");
    write(d, "data.yaml", "val: [\n");
    let stderr = error_exit(
        shears()
            .current_dir(d)
            .args(["val", "n.onnx", "--data", "data.yaml"]),
        "data.yaml: line 1 column 6: unclosed bracket",
    );
    assert_eq!(stderr.matches("unclosed bracket").count(), 1, "{stderr}");
}

#[test]
fn the_summary_fits_the_terminal_and_the_reports_keep_the_table() {
    let dir = scratch();
    let d = dir.path();
    small_yolov5n(d, "n.onnx");
    std::fs::write(d.join("broken.onnx"), b"not a model").unwrap();
    let pipeline = write(
        d,
        "p.yaml",
        "models: [n.onnx, broken.onnx]\npasses:\n  - prune_magnitude: {amount: 0.3}\noutput: out/{stem}.onnx\n",
    );
    let spec = shears::pipeline::load_spec(&pipeline).unwrap();
    let run = shears::pipeline::run_pipeline(&spec, &pipeline, 1, false, &shears::progress::Silent)
        .unwrap();
    let full = shears::pipeline::summary_table(&run, None);
    assert_eq!(full.lines().count(), 3, "{full}");
    assert!(full.lines().all(|l| l.len() > 120), "{full}");
    assert_eq!(shears::pipeline::summary_table(&run, Some(400)), full);
    let narrow = shears::pipeline::summary_table(&run, Some(80));
    assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");
    for needed in [
        "n.onnx\n",
        "broken.onnx\n",
        "  non-zero params ",
        "  status ",
        "ok\n",
    ] {
        assert!(narrow.contains(needed), "{needed:?} in:\n{narrow}");
    }
    assert_eq!(narrow.matches("  file size ").count(), 2, "{narrow}");
    // The Markdown report keeps one row per model.
    let prefix = d.join("out/summary");
    let mut plan = shears::onnx::OutputPlan::new();
    for path in shears::pipeline::summary_paths(&prefix) {
        plan.output("summary", &path).unwrap();
    }
    shears::pipeline::stage_summary(&run, &prefix, &mut plan).unwrap();
    plan.commit().unwrap();
    let markdown = std::fs::read_to_string(prefix.with_extension("md")).unwrap();
    assert_eq!(
        markdown.lines().filter(|l| l.starts_with("| ")).count(),
        3,
        "{markdown}"
    );
}
