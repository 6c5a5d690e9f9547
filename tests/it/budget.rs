//! `prune --max-map-drop`: the largest amount within an accuracy budget, checked against an
//! independent `val` of the written model, and a recipe that reproduces it byte for byte.

use std::process::Command;

use crate::common::{error_exit, fixture, scratch, shears, small_dataset, succeed};

#[test]
fn the_budget_search_keeps_the_drop_within_it_and_its_recipe_reproduces_the_model() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let Some(data) = small_dataset(d, 8) else {
        return;
    };
    let root = d.join("ds");
    let out = d.join("found.onnx");
    let budget = 0.05;
    succeed(
        shears()
            .arg("prune")
            .arg(&model)
            .arg("-o")
            .arg(&out)
            .args([
                "--scope",
                "global",
                "--max-map-drop",
                "0.05",
                "--resolution",
                "0.05",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--data-root")
            .arg(&root)
            .arg("--recipe")
            .arg(d.join("recipe.yaml"))
            .arg("--json")
            .arg(d.join("report.json")),
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
    let search = &report["search"];
    let trials = search["trials"].as_array().unwrap();
    assert_eq!(
        search["validations"].as_u64().unwrap() as usize,
        trials.len() + 1,
        "{search}"
    );
    // Bisection over 19 steps (0.05 .. 0.95) takes at most five validations of pruned models.
    assert!((1..=5).contains(&trials.len()), "{search}");
    let amount = search["amount"].as_f64().unwrap();
    let trial_at = |a: f64| {
        trials
            .iter()
            .find(|t| (t["amount"].as_f64().unwrap() - a).abs() < 1e-9)
            .unwrap_or_else(|| panic!("amount {a} was not tried: {search}"))
    };
    let found = trial_at(amount);
    assert_eq!(found["within_budget"], true, "{search}");
    assert!(found["drop"].as_f64().unwrap() <= budget, "{search}");
    let next = trial_at(amount + 0.05);
    assert_eq!(next["within_budget"], false, "{search}");
    assert!(next["drop"].as_f64().unwrap() > budget, "{search}");
    // The written model has the amount found: its global sparsity is that of the Conv weights.
    let sparsity = report["after"]["sparsity"]["conv_weights"]
        .as_f64()
        .unwrap();
    assert!(
        (sparsity - amount).abs() < 0.005,
        "{sparsity} against {amount}"
    );

    // An independent `val` of the written model and the dense one gives the recorded drop.
    succeed(
        shears()
            .arg("val")
            .arg(&model)
            .arg(&out)
            .arg("--data")
            .arg(&data)
            .arg("--data-root")
            .arg(&root)
            .arg("--json")
            .arg(d.join("val.json")),
    );
    let val: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("val.json")).unwrap()).unwrap();
    let dense = val["models"][0]["map50_95"].as_f64().unwrap();
    let pruned = val["models"][1]["map50_95"].as_f64().unwrap();
    assert!(
        (dense - search["dense"].as_f64().unwrap()).abs() < 1e-9,
        "{val}"
    );
    assert!(
        (dense - pruned - found["drop"].as_f64().unwrap()).abs() < 1e-9,
        "val: {dense} -> {pruned}; search: {found}"
    );

    // The recipe names the written model as its output, which is up to date; forced, it writes
    // the same bytes again.
    let kept = d.join("kept.onnx");
    std::fs::copy(&out, &kept).unwrap();
    let recipe = d.join("recipe.yaml");
    let stdout = succeed(shears().arg("run").arg(&recipe));
    assert!(stdout.contains("found.onnx: up to date"), "{stdout}");
    let stdout = succeed(shears().arg("run").arg(&recipe).arg("--force"));
    assert!(!stdout.contains("up to date"), "{stdout}");
    let cmp = Command::new("cmp").arg(&kept).arg(&out).output().unwrap();
    assert!(
        cmp.status.success(),
        "the recipe's model differs: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );
}

#[test]
fn a_budget_the_smallest_amount_exceeds_writes_nothing() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let Some(data) = small_dataset(d, 3) else {
        return;
    };
    let out = d.join("out.onnx");
    // One step: half the weights, which costs yolov5n most of its mAP.
    let outcome = shears()
        .arg("prune")
        .arg(&model)
        .arg("-o")
        .arg(&out)
        .args([
            "--scope",
            "global",
            "--max-map-drop",
            "0",
            "--resolution",
            "0.5",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--data-root")
        .arg(d.join("ds"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    assert_eq!(outcome.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("even the smallest amount, 0.5, drops map50_95 by")
            && stderr.contains("nothing written"),
        "{stderr}"
    );
    assert!(!out.exists());
    // N:M sparsity has no amount to search.
    error_exit(
        shears()
            .arg("prune")
            .arg(&model)
            .arg("-o")
            .arg(&out)
            .args(["--pattern", "2:4", "--max-map-drop", "0.01"])
            .arg("--data")
            .arg(&data),
        "--pattern",
    );
}

#[test]
fn a_pipeline_pass_searches_its_amount_within_max_map_drop() {
    let Some(model) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let Some(data) = small_dataset(d, 3) else {
        return;
    };
    let pipeline = d.join("search.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "models: ['{}']\npasses:\n  - prune_magnitude: {{amount: 0.5, scope: global, max_map_drop: 0.05}}\n\
             output: out/{{stem}}.onnx\nvalidate:\n  data: '{}'\n  data_root: ds\n  metric: map50_95\n",
            model.display(),
            data.display()
        ),
    )
    .unwrap();
    let stdout = succeed(shears().arg("run").arg(&pipeline));
    assert!(
        stdout.contains("found within the map50_95 budget of 0.05"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/summary.json")).unwrap())
            .unwrap();
    let validation = &summary["models"][0]["validation"];
    let search = &validation["search"];
    let amount = search["amount"].as_f64().unwrap();
    assert!(amount > 0.0 && amount <= 0.5, "{search}");
    // The gate's pruned model is the one the search found.
    assert!(validation["drop"].as_f64().unwrap() <= 0.05, "{validation}");
    // The output records the pass with the amount found, and no budget.
    let written = shears::onnx::load(&d.join("out/yolov5n_op12.onnx")).unwrap();
    let passes: serde_json::Value = serde_json::from_str(
        shears::onnx::metadata::get(&written.proto, shears::onnx::metadata::PASSES_KEY).unwrap(),
    )
    .unwrap();
    assert_eq!(
        passes[0]["options"]["amount"].as_f64(),
        Some(amount),
        "{passes}"
    );
    assert!(
        passes[0]["options"].get("max_map_drop").is_none(),
        "{passes}"
    );
    // Run again: up to date, with the search's record reported again.
    let stdout = succeed(shears().arg("run").arg(&pipeline));
    assert!(
        stdout.contains("up to date") && stdout.contains("found within"),
        "{stdout}"
    );
}
