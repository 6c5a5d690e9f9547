//! The README's examples run as written: every line of the block after the `<!-- examples`
//! marker, with only the binary's path and the fixture folder substituted.

use std::process::Command;

use crate::common::{fixture, fixtures, scratch, shears};

/// The lines of the marked example block.
fn example_lines(readme: &str) -> Vec<String> {
    let after_marker = readme
        .split_once("<!-- examples:")
        .expect("README marks its examples")
        .1;
    let block = after_marker
        .split_once("```sh\n")
        .expect("an sh block follows the marker")
        .1
        .split_once("```")
        .expect("the block is closed")
        .0;
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_marked_readme_example_runs_as_written() {
    let Some(_) = fixture("models/yolov5n_op12.onnx") else {
        return;
    };
    let readme = include_str!("../../README.md");
    let lines = example_lines(readme);
    assert!(lines.len() >= 5, "{lines:?}");
    let binary = shears().get_program().to_string_lossy().into_owned();
    let root = fixtures().to_string_lossy().into_owned();
    let dir = scratch();
    for line in &lines {
        let rest = line
            .strip_prefix("shears ")
            .unwrap_or_else(|| panic!("an example runs shears: {line}"));
        let command = format!("'{binary}' {}", rest.replace("../shared/fixtures", &root));
        let out = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README example failed: {line}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
