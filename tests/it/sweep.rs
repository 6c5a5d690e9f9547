//! `shears sweep` and `shears sensitivity` on the fixture yolov5n and a few coco128 images:
//! every point equals a separate `prune` + `val`, the plots are valid SVG and PNG holding their
//! series, an interrupted sweep resumes, each layer's sensitivity equals its own prune + val, and
//! both report their progress as nested phases.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use shears::eval::validate::DataSource;
use shears::eval::validator::ValSettings;
use shears::sweep::sensitivity::{SensitivityMethod, SensitivitySpec, sensitivity};
use shears::sweep::{SweepSpec, parse_methods, run_sweep};

use crate::common::{
    Recorder, Span, error_exit, fixture, fixtures, scratch, shears, small_dataset, succeed,
};

/// The first `n` coco128 images with their labels and the COCO annotations, as a dataset of
/// their own under `dir/ds`; returns its data YAML.
pub fn small_coco128(dir: &Path, n: usize) -> Option<PathBuf> {
    let images = fixture("coco/coco128/images/train2017")?;
    let root = dir.join("ds");
    for sub in ["images", "labels", "annotations"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let mut stems: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    let labels = fixtures().join("coco/coco128/labels/train2017");
    for stem in &stems[..n] {
        std::fs::copy(
            images.join(format!("{stem}.jpg")),
            root.join(format!("images/{stem}.jpg")),
        )
        .unwrap();
        let label = labels.join(format!("{stem}.txt"));
        if label.exists() {
            std::fs::copy(label, root.join(format!("labels/{stem}.txt"))).unwrap();
        }
    }
    std::fs::copy(
        fixtures().join("coco/coco128/annotations/instances_coco128.json"),
        root.join("annotations/instances_coco128.json"),
    )
    .unwrap();
    // coco128's class names, with this dataset's root
    let yaml = std::fs::read_to_string(fixtures().join("coco/coco128.yaml")).unwrap();
    let names = &yaml[yaml.find("names:").unwrap()..];
    let data = dir.join("ds.yaml");
    std::fs::write(
        &data,
        format!("path: {}\nval: images\n{names}", root.display()),
    )
    .unwrap();
    Some(data)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `val --json` of one model: (val.py mAP@.5:.95, COCO AP).
fn val_figures(model: &Path, data: &Path, dir: &Path) -> (f64, f64) {
    let json = dir.join(format!(
        "{}.val.json",
        model.file_stem().unwrap().to_string_lossy()
    ));
    succeed(
        shears()
            .arg("-q")
            .arg("val")
            .arg(model)
            .arg("--data")
            .arg(data)
            .args(["--iou", "0.65", "--json"])
            .arg(&json),
    );
    let report = read_json(&json);
    let m = &report["models"][0];
    (
        m["map50_95"].as_f64().unwrap(),
        m["coco"]["stats"][0].as_f64().unwrap(),
    )
}

#[test]
fn sweep_points_equal_prune_and_val_and_plots_hold_every_series_and_it_resumes() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let Some(data) = small_coco128(dir.path(), 4) else {
        return;
    };
    let out = dir.path().join("sweep");
    let sweep = || {
        let mut command = shears();
        command
            .arg("sweep")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args(["--iou", "0.65", "--amounts", "0.3"])
            .args([
                "--methods",
                "layer,2:4,channel",
                "--runs",
                "2",
                "--warmup",
                "0",
            ])
            .arg("-o")
            .arg(&out);
        command
    };
    let first = succeed(&mut sweep());
    assert!(
        first.contains("4 model(s): 4 computed, 0 resumed"),
        "{first}"
    );
    let report = read_json(&out.join("sweep.json"));
    assert_eq!(report["metric"], "coco_ap");
    assert_eq!(report["images"], 4);
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);

    // Every point is what `prune` writes and what `val` measures.
    let dense = val_figures(&model, &data, dir.path());
    let accuracy = |p: &Value| {
        (
            p["accuracy"]["map50_95"].as_f64().unwrap(),
            p["accuracy"]["coco"][0].as_f64().unwrap(),
        )
    };
    assert_eq!(accuracy(&report["dense"]), dense);
    let flags: [(&str, &[&str]); 3] = [
        ("layer-0.3", &["--amount", "0.3", "--scope", "layer"]),
        ("2-4", &["--pattern", "2:4"]),
        ("channel-0.3", &["--method", "channel", "--amount", "0.3"]),
    ];
    for (point, (id, args)) in points.iter().zip(flags) {
        assert_eq!(point["id"], id);
        let pruned = dir.path().join(format!("{id}.onnx"));
        succeed(
            shears()
                .arg("-q")
                .arg("prune")
                .arg(&model)
                .arg("-o")
                .arg(&pruned)
                .args(args),
        );
        let kept = out.join(format!("models/{id}.onnx"));
        assert!(
            std::fs::read(&kept).unwrap() == std::fs::read(&pruned).unwrap(),
            "{id}: the sweep's model differs from prune's"
        );
        assert_eq!(
            accuracy(point),
            val_figures(&pruned, &data, dir.path()),
            "{id}"
        );
        assert!(
            point["timing"]["median_ms"].as_f64().unwrap() > 0.0,
            "{point}"
        );
    }
    // the channel point has fewer MACs
    assert!(points[2]["mac_ratio"].as_f64().unwrap() < 1.0);

    check_plots(&out, &["layer", "2:4", "channel"]);
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(md.contains("| channel | 0.3 |"), "{md}");
    assert!(
        md.contains("![ap_vs_sparsity.svg](ap_vs_sparsity.svg)"),
        "{md}"
    );

    // A second run reuses every point without rewriting it; a changed model is redone.
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let files: Vec<PathBuf> = [
        "points/dense.json",
        "points/layer-0.3.json",
        "models/2-4.onnx",
    ]
    .iter()
    .map(|f| out.join(f))
    .collect();
    let before: Vec<u64> = files.iter().map(|f| inode(f)).collect();
    let second = succeed(&mut sweep());
    assert!(
        second.contains("4 model(s): 0 computed, 4 resumed"),
        "{second}"
    );
    assert_eq!(files.iter().map(|f| inode(f)).collect::<Vec<_>>(), before);
    let again = read_json(&out.join("sweep.json"));
    for (a, b) in points.iter().zip(again["points"].as_array().unwrap()) {
        assert_eq!(b["resumed"], true);
        assert_eq!(a["accuracy"], b["accuracy"]);
    }
    std::fs::write(out.join("models/2-4.onnx"), b"not the model").unwrap();
    let third = succeed(&mut sweep());
    assert!(
        third.contains("4 model(s): 1 computed, 3 resumed"),
        "{third}"
    );
}

/// Both plots are SVG documents of the stated size naming every series, and PNGs of the same
/// size drawing every series' colour.
fn check_plots(out: &Path, methods: &[&str]) {
    let (width, height) = shears::plot::LINE_CHART_SIZE;
    for stem in ["ap_vs_sparsity", "ap_vs_latency"] {
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{stem}.svg: {e}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.attribute("width"), Some(width.to_string().as_str()));
        assert_eq!(root.attribute("height"), Some(height.to_string().as_str()));
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for label in methods.iter().chain(&["dense"]) {
            assert!(
                texts.contains(label),
                "{stem}.svg: no legend {label}: {texts:?}"
            );
        }
        assert!(
            texts.iter().any(|t| t.starts_with("COCO AP (")),
            "{stem}.svg: no y axis label: {texts:?}"
        );
        // a line per method, and its legend sample
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        assert!(lines >= 2 * methods.len(), "{stem}.svg: {lines} polylines");

        let png = image::open(out.join(format!("{stem}.png")))
            .unwrap_or_else(|e| panic!("{stem}.png: {e}"))
            .to_rgb8();
        assert_eq!(png.dimensions(), (width, height));
        for (i, &(r, g, b)) in shears::plot::SERIES_COLORS[..=methods.len()]
            .iter()
            .enumerate()
        {
            assert!(
                png.pixels().any(|p| p.0 == [r, g, b]),
                "{stem}.png: series {i}'s colour is not drawn"
            );
        }
    }
}

#[test]
fn sweep_refuses_recovery_without_calibration_and_unknown_methods() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let data = dir.path().join("missing.yaml");
    let sweep = |methods: &str| {
        let mut command = shears();
        command
            .arg("sweep")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args(["--methods", methods, "-o"])
            .arg(dir.path().join("out"));
        command
    };
    error_exit(&mut sweep("global+obs"), "give --calib DATA");
    error_exit(
        &mut sweep("global,magnitude"),
        "unknown method \"magnitude\"",
    );
    error_exit(&mut sweep("global+fast"), "unknown suffix \"fast\"");
    error_exit(&mut sweep("channel+ft"), "give --calib DATA");
    error_exit(&mut sweep("global+ft+obs"), "+ft comes last");
    assert!(!dir.path().join("out/sweep.json").exists());
}

#[test]
fn sensitivity_rows_equal_pruning_that_layer_alone() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let Some(data) = small_coco128(dir.path(), 3) else {
        return;
    };
    let out = dir.path().join("sens");
    succeed(
        shears()
            .arg("sensitivity")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args(["--iou", "0.65", "--amounts", "0.5,0.9"])
            .args(["--include", r"^/model\.(2|8)/cv1/"])
            .arg("-o")
            .arg(&out),
    );
    let report = read_json(&out.join("sensitivity.json"));
    let rows = report["rows"].as_array().unwrap();
    let units: Vec<&str> = rows.iter().map(|r| r["unit"].as_str().unwrap()).collect();
    assert_eq!(units, ["/model.2/cv1/conv/Conv", "/model.8/cv1/conv/Conv"]);
    let dense = report["dense_metric"].as_f64().unwrap();
    assert_eq!(dense, val_figures(&model, &data, dir.path()).1);
    // the first layer at 0.9, pruned and validated on its own
    let pruned = dir.path().join("one.onnx");
    succeed(
        shears()
            .arg("-q")
            .arg("prune")
            .arg(&model)
            .arg("-o")
            .arg(&pruned)
            .args(["--amount", "0.9", "--include", r"^/model\.2/cv1/conv/Conv$"]),
    );
    let cell = &rows[0]["cells"][1];
    assert_eq!(cell["amount"], 0.9);
    assert_eq!(
        cell["metric"].as_f64().unwrap(),
        val_figures(&pruned, &data, dir.path()).1
    );
    assert!(
        (cell["drop"].as_f64().unwrap() - (dense - cell["metric"].as_f64().unwrap())).abs() < 1e-12
    );
    // the heatmap: one row per unit, a cell text per value
    let svg = std::fs::read_to_string(out.join("heatmap.svg")).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for unit in &units {
        assert!(texts.contains(unit), "no row {unit}: {texts:?}");
    }
    assert!(texts.contains(&format!("{:.3}", cell["drop"].as_f64().unwrap()).as_str()));
    let png = image::open(out.join("heatmap.png")).unwrap();
    let height = doc.root_element().attribute("height").unwrap();
    assert_eq!(png.height().to_string(), height);
    let csv = std::fs::read_to_string(out.join("sensitivity.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * 2, "{csv}");
}

/// A resumed point is re-checked, not trusted: validation data of the same relative name but
/// other content (here one label less), and a record edited by hand, are recomputed.
#[test]
fn sweep_recomputes_points_whose_validation_data_or_record_changed() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let (first, second) = (dir.path().join("a"), dir.path().join("b"));
    for folder in [&first, &second] {
        std::fs::create_dir(folder).unwrap();
        if small_coco128(folder, 3).is_none() {
            return;
        }
    }
    // the second dataset: the same images, one label line less
    let labels = second.join("ds/labels");
    let label = std::fs::read_dir(&labels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p).unwrap().lines().count() > 1)
        .expect("a label file with two objects");
    let text = std::fs::read_to_string(&label).unwrap();
    std::fs::write(&label, text.lines().next().unwrap().to_string() + "\n").unwrap();
    let out = dir.path().join("sweep");
    // `--data ds.yaml` relative to the folder it runs in
    let sweep = |folder: &Path| {
        succeed(
            shears()
                .current_dir(folder)
                .arg("sweep")
                .arg(&model)
                .args(["--data", "ds.yaml", "--iou", "0.65", "--amounts", "0.3"])
                .args(["--methods", "layer", "--runs", "0"])
                .arg("-o")
                .arg(&out),
        )
    };
    let text = sweep(&first);
    assert!(text.contains("2 model(s): 2 computed, 0 resumed"), "{text}");
    let text = sweep(&second);
    assert!(text.contains("2 model(s): 2 computed, 0 resumed"), "{text}");
    let text = sweep(&second);
    assert!(text.contains("2 model(s): 0 computed, 2 resumed"), "{text}");

    // an edited figure in a record
    let record = out.join("points/layer-0.3.json");
    let mut json = read_json(&record);
    let edited = json["accuracy"]["map50"].as_f64().unwrap() + 0.25;
    json["accuracy"]["map50"] = edited.into();
    std::fs::write(&record, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let text = sweep(&second);
    assert!(text.contains("2 model(s): 1 computed, 1 resumed"), "{text}");
    assert_ne!(read_json(&record)["accuracy"]["map50"], edited);
}

/// Validation as `val --data DATA --iou 0.65` does it, on tract.
fn val_settings(data: &Path) -> ValSettings {
    ValSettings {
        data: DataSource::Yaml {
            data: data.to_path_buf(),
            root: None,
        },
        gt: None,
        images: None,
        nms: shears::eval::nms::NmsConfig::with(0.001, 0.65, 300),
        backend: shears::backend::BackendSpec::default(),
        max_pixels: shears::eval::preprocess::DEFAULT_MAX_PIXELS,
    }
}

/// The fixture yolov5n, a scratch folder, and in it two coco128 images as a dataset (its YAML);
/// `None` when the fixtures are absent outside CI.
fn yolov5n_and_two_images() -> Option<(PathBuf, tempfile::TempDir, PathBuf)> {
    let model = fixture("models/yolov5n_op12.onnx")?;
    let dir = scratch();
    let data = small_dataset(dir.path(), 2)?;
    Some((model, dir, data))
}

/// Asserts that every phase deeper than `outer` ran inside it and finished, and that those one
/// level deeper are `labels`, in order.
fn assert_nested_in(recorder: &Recorder, outer: &Span, labels: &[&str]) {
    let spans = recorder.spans();
    let inner: Vec<&Span> = spans.iter().filter(|s| s.depth > outer.depth).collect();
    for span in &inner {
        assert!(outer.holds(span), "{span:?} not inside {outer:?}");
    }
    let next: Vec<&str> = inner
        .iter()
        .filter(|s| s.depth == outer.depth + 1)
        .map(|s| s.label.as_str())
        .collect();
    assert_eq!(next, labels, "{spans:#?}");
}

/// A sweep's progress: one phase counts its points (the dense model and each method at each
/// amount) and names the point at work; each point's pruning and validation run inside it.
#[test]
fn a_sweep_counts_its_points_and_nests_each_points_phases() {
    let Some((model, dir, data)) = yolov5n_and_two_images() else {
        return;
    };
    let spec = SweepSpec {
        model,
        methods: parse_methods("layer").unwrap(),
        amounts: vec![0.3],
        include: Vec::new(),
        exclude: Vec::new(),
        validation: val_settings(&data),
        calibration: None,
        timing: None,
        out: dir.path().join("out"),
    };
    let recorder = Recorder::default();
    run_sweep(&spec, &recorder).unwrap();
    let points = recorder.span("sweep point");
    assert_eq!((points.depth, points.total, points.steps), (0, Some(2), 2));
    assert_eq!(points.notes, ["dense", "layer 0.3"]);
    assert_nested_in(&recorder, &points, &["dense", "pruning", "validating"]);
}

/// Sensitivity's progress: one phase counts the layers and names the layer and amount at work;
/// each amount's pruning and validation run inside it.
#[test]
fn sensitivity_counts_its_layers_and_nests_each_amounts_phases() {
    let Some((model, dir, data)) = yolov5n_and_two_images() else {
        return;
    };
    let spec = SensitivitySpec {
        model,
        method: SensitivityMethod::Magnitude,
        amounts: vec![0.5],
        include: vec![r"^/model\.(2|8)/cv1/".to_string()],
        exclude: Vec::new(),
        validation: val_settings(&data),
        out: dir.path().join("sens"),
    };
    let recorder = Recorder::default();
    sensitivity(&spec, &recorder).unwrap();
    let layers = recorder.span("Conv layer");
    assert_eq!((layers.depth, layers.total, layers.steps), (0, Some(2), 2));
    assert_eq!(
        layers.notes,
        [
            "/model.2/cv1/conv/Conv at 0.5",
            "/model.8/cv1/conv/Conv at 0.5"
        ]
    );
    assert_nested_in(
        &recorder,
        &layers,
        &["pruning", "validating", "pruning", "validating"],
    );
}
