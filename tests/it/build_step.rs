//! `shears run` as a build step: outputs that record the run's build key are skipped, and
//! `examples/Makefile` redoes exactly what changed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::{fixture, scratch, shears, small_dataset};

/// `make`, or `None` outside CI when it is absent (the test then skips).
fn make() -> Option<Command> {
    let found = Command::new("make").arg("--version").output().is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("make is missing (CI is set)");
        }
        eprintln!("skipping: make is missing");
        return None;
    }
    Some(Command::new("make"))
}

/// (inode, bytes) of a file: a rewrite through a temporary file changes the inode.
fn identity(path: &Path) -> (u64, Vec<u8>) {
    (
        std::fs::metadata(path).unwrap().ino(),
        std::fs::read(path).unwrap(),
    )
}

/// Sets a file's modification time to now, as `touch` does, after a pause long enough for
/// the file system's clock to move.
fn touch(path: &Path) {
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::File::open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
}

#[test]
fn the_makefile_redoes_exactly_what_changed() {
    if make().is_none() {
        return;
    }
    let dir = scratch();
    let d = dir.path();
    let Some(data) = small_dataset(d, 3) else {
        return;
    };
    // A real model: a gate refuses a validation that measures nothing (a random model's 0).
    let (Some(op12), Some(op17)) = (
        fixture("models/yolov5n_op12.onnx"),
        fixture("models/yolov5n_op17_sim.onnx"),
    ) else {
        return;
    };
    let model = d.join("model.onnx");
    std::fs::copy(&op12, &model).unwrap();
    // The example as shipped, copied so that the test can edit its pipeline; its budget is
    // widened for a validation on three images.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    std::fs::create_dir(d.join("examples")).unwrap();
    std::fs::copy(examples.join("Makefile"), d.join("examples/Makefile")).unwrap();
    let pipeline = d.join("examples/deploy.yaml");
    let original = std::fs::read_to_string(examples.join("deploy.yaml"))
        .unwrap()
        .replace("max_map_drop: 0.1", "max_map_drop: 0.5");
    assert!(original.contains("max_map_drop: 0.5"), "{original}");
    std::fs::write(&pipeline, &original).unwrap();
    let make_run = |extra: &[&str]| -> (Option<i32>, String) {
        let out = make()
            .unwrap()
            .current_dir(d)
            .args(["-f", "examples/Makefile"])
            .arg(format!("SHEARS={}", env!("CARGO_BIN_EXE_shears")))
            .arg("MODEL=model.onnx")
            .arg(format!("DATA={}", data.display()))
            .arg(format!("DATA_ROOT={}", d.join("ds").display()))
            .arg("OUT=build")
            .args(extra)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let output = d.join("build/model-pruned.onnx");
    let summary = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("build/summary.json")).unwrap())
            .unwrap()
    };

    // First run: pruned, validated and gated; the depfile names the data.
    let (code, text) = make_run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("up to date"), "{text}");
    assert_eq!(summary()["models"][0]["up_to_date"], false);
    let validation = summary()["models"][0]["validation"].clone();
    assert!(validation["drop"].as_f64().is_some(), "{validation}");
    let depfile = std::fs::read_to_string(d.join("build/deploy.d")).unwrap();
    for needed in [
        "examples/deploy.yaml",
        "model.onnx",
        "ds.yaml",
        "000000000025.jpg",
        "000000000025.txt",
    ] {
        assert!(depfile.contains(needed), "{needed} in:\n{depfile}");
    }
    let built = identity(&output);

    // Second run: make finds nothing to do.
    let (code, text) = make_run(&["--question"]);
    assert_eq!(code, Some(0), "make -q says the target is stale: {text}");
    let (code, text) = make_run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Nothing to be done"), "{text}");
    assert_eq!(identity(&output), built);

    // A touched but unchanged model: shears hashes it, says so, and rewrites nothing; its
    // recorded validation is reported again, and make is satisfied afterwards.
    touch(&model);
    let (code, text) = make_run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("model-pruned.onnx: up to date"), "{text}");
    assert_eq!(identity(&output), built, "the output was rewritten");
    assert_eq!(summary()["models"][0]["up_to_date"], true);
    assert_eq!(summary()["models"][0]["validation"], validation);
    assert_eq!(make_run(&["--question"]).0, Some(0));

    // A touched validation label: the same.
    touch(&d.join("ds/labels/000000000025.txt"));
    let (code, text) = make_run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("up to date"), "{text}");
    assert_eq!(identity(&output), built);

    // A pipeline changed only in a comment: the same.
    touch(&pipeline);
    std::fs::write(&pipeline, format!("# a comment\n{original}")).unwrap();
    let (code, text) = make_run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("up to date"), "{text}");
    assert_eq!(identity(&output), built);

    // New bytes in the input model: redone.
    touch(&model);
    std::fs::copy(&op17, &model).unwrap();
    let (code, text) = make_run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("up to date"), "{text}");
    let rebuilt = identity(&output);
    assert_ne!(rebuilt.0, built.0, "not rewritten");
    assert_ne!(rebuilt.1, built.1);
    assert_eq!(summary()["models"][0]["up_to_date"], false);

    // Another amount in the pipeline: redone.
    touch(&pipeline);
    std::fs::write(&pipeline, original.replace("amount: 0.3", "amount: 0.4")).unwrap();
    let (code, text) = make_run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("up to date"), "{text}");
    let again = identity(&output);
    assert_ne!(again.1, rebuilt.1);

    // Changed validation data: redone, since the recorded validation depends on it.
    let label = d.join("ds/labels/000000000025.txt");
    touch(&label);
    let text_label = std::fs::read_to_string(&label).unwrap();
    std::fs::write(
        &label,
        text_label.lines().next().unwrap().to_string() + "\n",
    )
    .unwrap();
    let (code, text) = make_run(&[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("up to date"), "{text}");
    assert_ne!(identity(&output).0, again.0);
}

#[test]
fn force_redoes_an_up_to_date_model_and_a_recorded_gate_still_fails() {
    let dir = scratch();
    let d = dir.path();
    let Some(yolov5n) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let Some(data) = small_dataset(d, 3) else {
        return;
    };
    std::fs::copy(yolov5n, d.join("m.onnx")).unwrap();
    let pipeline = d.join("p.yaml");
    let write_pipeline = |budget: &str| {
        std::fs::write(
            &pipeline,
            format!(
                "models: [m.onnx]\npasses:\n  - prune_magnitude: {{amount: 0.3}}\noutput: out/{{stem}}.onnx\n\
                 validate:\n  data: {}\n  data_root: ds\n  metric: map50_95\n  max_map_drop: {budget}\n",
                data.display()
            ),
        )
        .unwrap();
    };
    write_pipeline("1.0");
    let run = |extra: &[&str]| {
        shears()
            .arg("run")
            .arg(&pipeline)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(out.status.success(), "{out:?}");
    let output = d.join("out/m.onnx");
    let first = identity(&output);
    let out = run(&["--force"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("up to date"), "{stdout}");
    let forced = identity(&output);
    assert_ne!(forced.0, first.0, "--force rewrites the output");
    // A budget the recorded drop exceeds fails the gate without redoing the model (the budget is
    // not part of the build key): the guide's 30% per layer more than halves yolov5n's mAP.
    write_pipeline("0.01");
    let out = run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("up to date") && stdout.contains("GATE FAILED"),
        "{stdout}"
    );
    assert_eq!(identity(&output).0, forced.0);
}

#[test]
fn the_depfile_names_every_prerequisite_and_make_reads_any_image_name() {
    let Some(mut make) = make() else {
        return;
    };
    let dir = scratch();
    let d = dir.path();
    let (Some(data), Some(model), Some(extra)) = (
        small_dataset(d, 3),
        fixture("models/yolov5n_op12.onnx"),
        fixture("coco/coco_extra_train/images/train2017"),
    ) else {
        return;
    };
    std::fs::copy(model, d.join("m.onnx")).unwrap();
    // Validation images named by a list file, one of them with a colon and a space in its name.
    let mut names: Vec<String> = std::fs::read_dir(d.join("ds/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let odd = "a: b.jpg";
    std::fs::rename(
        d.join("ds/images").join(&names[0]),
        d.join("ds/images").join(odd),
    )
    .unwrap();
    std::fs::rename(
        d.join("ds/labels").join(names[0].replace(".jpg", ".txt")),
        d.join("ds/labels/a: b.txt"),
    )
    .unwrap();
    names[0] = odd.to_string();
    let background = d.join("ds/labels").join(names[1].replace(".jpg", ".txt"));
    let background_label = std::fs::read(&background).unwrap();
    std::fs::remove_file(&background).unwrap();
    let list: String = names.iter().map(|n| format!("./images/{n}\n")).collect();
    std::fs::write(d.join("ds/val.txt"), list).unwrap();
    let yaml = std::fs::read_to_string(&data)
        .unwrap()
        .replace("val: images", "val: val.txt");
    std::fs::write(&data, yaml).unwrap();
    let calib = d.join("calib");
    std::fs::create_dir(&calib).unwrap();
    std::fs::copy(
        extra.join("000000000790.jpg"),
        calib.join("000000000790.jpg"),
    )
    .unwrap();
    std::fs::write(
        d.join("p.yaml"),
        "models: [m.onnx]\npasses:\n  - prune_magnitude: {amount: 0.3, scope: global, recover: stats}\n\
         output: out/{stem}.onnx\ncalibration: {data: calib, images: 1}\n\
         validate: {data: ds.yaml, metric: map50_95}\n",
    )
    .unwrap();
    // Absolute paths: the depfile names files as shears resolved them.
    std::fs::write(
        d.join("Makefile"),
        format!(
            "{0}/out/m.onnx: {0}/p.yaml {0}/m.onnx\n\t{1} run {0}/p.yaml --depfile {0}/out/m.d\n\
             -include {0}/out/m.d\n",
            d.display(),
            env!("CARGO_BIN_EXE_shears")
        ),
    )
    .unwrap();
    make.current_dir(d);
    let up_to_date = || {
        let out = Command::new("make")
            .current_dir(d)
            .arg("-q")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "make -q: {stderr}"
        );
        out.status.code() == Some(0)
    };
    let build = |make: &mut Command| {
        let out = make.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(up_to_date(), "not up to date after make");
    };
    build(&mut make);
    let depfile = std::fs::read_to_string(d.join("out/m.d")).unwrap();
    for needed in [
        "ds/val.txt".to_string(),
        "ds/images/a\\:\\ b.jpg".to_string(),
        format!("\n{}:\n", d.join("ds/labels").display()),
        format!("\n{}:\n", calib.display()),
    ] {
        assert!(depfile.contains(&needed), "{needed} in:\n{depfile}");
    }

    let changes: [(&str, &dyn Fn()); 4] = [
        ("an added calibration image", &|| {
            std::fs::copy(
                extra.join("000000008193.jpg"),
                calib.join("000000008193.jpg"),
            )
            .unwrap();
        }),
        ("an added label", &|| {
            std::fs::write(&background, &background_label).unwrap()
        }),
        ("an edited image list", &|| {
            let list = d.join("ds/val.txt");
            let text = std::fs::read_to_string(&list).unwrap();
            let kept: Vec<&str> = text.lines().take(2).collect();
            std::fs::write(&list, kept.join("\n")).unwrap();
        }),
        ("a touched image with a colon", &|| {
            touch(&d.join("ds/images").join(odd));
        }),
    ];
    for (what, change) in changes {
        std::thread::sleep(std::time::Duration::from_millis(50));
        change();
        assert!(!up_to_date(), "make missed {what}");
        build(&mut make);
    }
}

/// An output is up to date only while it is the model its build record vouches for: weights
/// zeroed in place (metadata kept) or an edited recorded validation make `shears run` redo it.
#[test]
fn an_output_changed_in_place_or_an_edited_validation_is_rebuilt() {
    let dir = scratch();
    let d = dir.path();
    let Some(yolov5n) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let Some(data) = small_dataset(d, 3) else {
        return;
    };
    std::fs::copy(yolov5n, d.join("m.onnx")).unwrap();
    let pipeline = d.join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            "models: [m.onnx]\npasses:\n  - prune_magnitude: {{amount: 0.3}}\noutput: out/{{stem}}.onnx\n\
             validate:\n  data: {}\n  data_root: ds\n  metric: map50_95\n",
            data.display()
        ),
    )
    .unwrap();
    let output = d.join("out/m.onnx");
    let run = || {
        let out = shears().arg("run").arg(&pipeline).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let edit = |change: &dyn Fn(&mut shears::onnx::proto::ModelProto)| {
        let mut model = shears::onnx::load(&output).unwrap().proto;
        change(&mut model);
        std::fs::write(&output, shears::onnx::encode(&model)).unwrap();
    };
    run();
    let stdout = run();
    assert!(stdout.contains("up to date"), "{stdout}");

    edit(&|model| {
        let weight = model
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .iter_mut()
            .find(|t| t.raw_data.as_ref().is_some_and(|r| r.len() > 1000))
            .unwrap();
        let zeros = vec![0u8; weight.raw_data.as_ref().unwrap().len()];
        weight.raw_data = Some(zeros.into());
    });
    let stdout = run();
    assert!(
        !stdout.contains("up to date"),
        "zeroed weights trusted: {stdout}"
    );
    let stdout = run();
    assert!(stdout.contains("up to date"), "{stdout}");

    let dense_map = |model: &shears::onnx::proto::ModelProto| -> f64 {
        let entry = model
            .metadata_props
            .iter()
            .find(|p| p.key() == "shears.validation")
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(entry.value()).unwrap();
        v["dense"]["map50_95"].as_f64().unwrap()
    };
    edit(&|model| {
        let entry = model
            .metadata_props
            .iter_mut()
            .find(|p| p.key() == "shears.validation")
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_str(entry.value()).unwrap();
        v["dense"]["map50_95"] = 0.99.into();
        entry.value = Some(v.to_string());
    });
    let stdout = run();
    assert!(
        !stdout.contains("up to date"),
        "an edited validation trusted: {stdout}"
    );
    assert_ne!(dense_map(&shears::onnx::load(&output).unwrap().proto), 0.99);
}
