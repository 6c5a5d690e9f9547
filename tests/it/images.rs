//! Images that would silently change or crash a validation: a header claiming huge dimensions,
//! a truncated JPEG, a JPEG the exact decoder does not reproduce, a dataset without labels.
//! Each is warned about per image (or dataset), counted in `val --json`, and an error under
//! `--strict`.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;
use serde_json::Value;
use shears::eval::preprocess::{DEFAULT_MAX_PIXELS, load_rgb};

use crate::common::{error_exit, scratch, shears, succeed};

/// A 32x32 baseline JPEG encoded by the `image` crate.
fn small_jpeg() -> Vec<u8> {
    let pixels: Vec<u8> = (0..32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode(&pixels, 32, 32, ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// `jpeg` with the frame header rewritten to claim `width x height` pixels.
fn claiming(mut jpeg: Vec<u8>, width: u16, height: u16) -> Vec<u8> {
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

/// A 16x16 four-component (CMYK) baseline JPEG, written by hand: every block is DC 0 and EOB
/// under one-symbol Huffman tables. The exact decoder does not reproduce CMYK; the `image`
/// crate decodes it.
fn cmyk_jpeg() -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    // quantisation table 0: all ones
    j.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend([1u8; 64]);
    // frame: 8-bit, 16x16, four components sampled 1x1, table 0
    j.extend([0xFF, 0xC0, 0x00, 0x14, 0x08, 0x00, 0x10, 0x00, 0x10, 0x04]);
    for id in 1..=4 {
        j.extend([id, 0x11, 0x00]);
    }
    // Huffman tables: DC 0 and AC 0, each one code of length 1 (DC category 0, AC EOB)
    for class in [0x00, 0x10] {
        j.extend([0xFF, 0xC4, 0x00, 0x14, class, 0x01]);
        j.extend([0u8; 15]);
        j.push(0x00);
    }
    // Adobe marker: transform 0 (CMYK, no colour transform)
    j.extend([0xFF, 0xEE, 0x00, 0x0E]);
    j.extend(b"Adobe");
    j.extend([0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00]);
    // one interleaved scan of all four components: 16 blocks of two 1-bit codes
    j.extend([0xFF, 0xDA, 0x00, 0x0E, 0x04]);
    for id in 1..=4 {
        j.extend([id, 0x00]);
    }
    j.extend([0x00, 0x3F, 0x00]);
    j.extend([0x00; 4]);
    j.extend([0xFF, 0xD9]);
    j
}

/// A YOLO dataset in `dir`: `images/<name>.jpg` for each of `images`, each with one label
/// unless `labels` is false, and its data YAML.
fn dataset(dir: &Path, images: &[(&str, Vec<u8>)], labels: bool) -> PathBuf {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    if labels {
        std::fs::create_dir_all(dir.join("labels")).unwrap();
    }
    for (name, bytes) in images {
        std::fs::write(dir.join(format!("images/{name}.jpg")), bytes).unwrap();
        if labels {
            std::fs::write(
                dir.join(format!("labels/{name}.txt")),
                "0 0.5 0.5 0.25 0.25\n",
            )
            .unwrap();
        }
    }
    let yaml = dir.join("data.yaml");
    std::fs::write(
        &yaml,
        format!("path: {}\nval: images\nnames: [thing]\n", dir.display()),
    )
    .unwrap();
    yaml
}

/// A one-class YOLOv5n with a 64x64 input.
fn model(dir: &Path) -> PathBuf {
    let path = dir.join("model.onnx");
    succeed(
        shears()
            .args(["synth", "yolov5n", "--nc", "1", "--imgsz", "64", "-o"])
            .arg(&path),
    );
    path
}

/// `shears val` of `model` on `yaml` with `--json`: (exit code, stderr, report).
fn val(model: &Path, yaml: &Path, extra: &[&str]) -> (Option<i32>, String, Option<Value>) {
    let report = yaml.with_file_name("report.json");
    let _ = std::fs::remove_file(&report);
    let out = shears()
        .arg("val")
        .arg(model)
        .arg("--data")
        .arg(yaml)
        .arg("--json")
        .arg(&report)
        .args(extra)
        .output()
        .unwrap();
    let json = std::fs::read(&report)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        json,
    )
}

#[test]
fn a_header_claiming_huge_dimensions_is_refused_before_decoding() {
    let huge = claiming(small_jpeg(), 60000, 60000);
    let err = shears::eval::jpeg::decode(&huge, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(format!("{err:#}").contains("over the limit"), "{err:#}");
    let dir = scratch();
    let path = dir.path().join("huge.jpg");
    std::fs::write(&path, &huge).unwrap();
    let err = load_rgb(&path, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(format!("{err:#}").contains("over the limit"), "{err:#}");
    // a limit set lower refuses a real image too
    std::fs::write(&path, small_jpeg()).unwrap();
    assert!(load_rgb(&path, 32 * 32).is_ok());
    assert!(load_rgb(&path, 32 * 32 - 1).is_err());

    // `val` skips it with a warning and counts it, in bounded memory: decoding the header's
    // 60000x60000 pixels would take over 10 GB, more than this address-space limit allows
    let data = dataset(dir.path(), &[("huge", huge), ("small", small_jpeg())], true);
    let model = model(dir.path());
    let script = "ulimit -v 4000000 && exec \"$@\"";
    let out = Command::new("sh")
        .args(["-c", script, "sh", env!("CARGO_BIN_EXE_shears"), "val"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--json")
        .arg(dir.path().join("report.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("huge.jpg: skipped: 60000x60000 is 3600000000 pixels, over the limit"),
        "{stderr}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["dataset"]["too_large"], 1);
    assert_eq!(report["models"][0]["images"], 1);
    // settable: a limit below 32x32 skips the small image too, leaving none
    let (code, stderr, _) = val(&model, &data, &["--max-pixels", "1000"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no usable images"), "{stderr}");
    let (code, stderr, _) = val(&model, &data, &["--strict"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--strict"), "{stderr}");
}

#[test]
fn a_truncated_jpeg_is_warned_about_and_counted() {
    let dir = scratch();
    let whole = small_jpeg();
    let cut = whole[..whole.len() * 2 / 3].to_vec();
    let data = dataset(dir.path(), &[("cut", cut), ("whole", whole)], true);
    let model = model(dir.path());
    let (code, stderr, report) = val(&model, &data, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("cut.jpg: truncated JPEG"), "{stderr}");
    assert!(!stderr.contains("whole.jpg"), "{stderr}");
    let report = report.unwrap();
    let truncated = report["models"][0]["truncated"].as_array().unwrap();
    assert_eq!(truncated.len(), 1);
    assert!(truncated[0].as_str().unwrap().ends_with("cut.jpg"));
    let (code, stderr, report) = val(&model, &data, &["--strict"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(report.is_none(), "no report under --strict when it fails");
}

#[test]
fn a_dataset_without_labels_is_warned_about() {
    let dir = scratch();
    let data = dataset(dir.path(), &[("a", small_jpeg())], false);
    let model = model(dir.path());
    let (code, stderr, report) = val(&model, &data, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("no labels found for the 1 images") && stderr.contains("labels/a.txt"),
        "{stderr}"
    );
    assert_eq!(report.unwrap()["dataset"]["no_labels"], true);
    error_exit(
        shears()
            .arg("val")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--strict"),
        "--strict",
    );
}

#[test]
fn a_jpeg_the_exact_decoder_cannot_reproduce_is_named() {
    let cmyk = cmyk_jpeg();
    let err = shears::eval::jpeg::decode(&cmyk, DEFAULT_MAX_PIXELS).unwrap_err();
    assert!(err.is::<shears::eval::jpeg::Unsupported>(), "{err:#}");
    let dir = scratch();
    let data = dataset(dir.path(), &[("cmyk", cmyk), ("plain", small_jpeg())], true);
    let decoded = load_rgb(&dir.path().join("images/cmyk.jpg"), DEFAULT_MAX_PIXELS).unwrap();
    assert_eq!(decoded.image.dimensions(), (16, 16));
    assert_eq!(
        decoded.notes.fallback.as_deref(),
        Some("unsupported JPEG: 4 components")
    );
    let model = model(dir.path());
    let (code, stderr, report) = val(&model, &data, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("cmyk.jpg: unsupported JPEG: 4 components: decoded by the image crate"),
        "{stderr}"
    );
    let report = report.unwrap();
    assert_eq!(
        report["models"][0]["decoder_fallback"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(report["models"][0]["images"], 2);
    let (code, _, _) = val(&model, &data, &["--strict"]);
    assert_eq!(code, Some(2));
}
