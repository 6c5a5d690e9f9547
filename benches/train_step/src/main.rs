//! One distillation training step of YOLOv5 (graph from `images` to the three Detect-head
//! convs) on candle and on burn, timed per phase, for issue 19's choice of autodiff crate.
//!
//! Usage: train_step_bench (candle | burn-ndarray | burn-flex) [--data DIR] [--imgsz N]
//!        [--batch N] [--warmup N] [--steps N] [--lr F] [--no-fuse-silu] [--no-check]
//! DIR is export_graph.py's output (default ../../target/train-step from this crate).
//! Prints one JSON object: the forward check against onnxruntime's head outputs, per-phase
//! medians in seconds, and the process's peak RSS.

mod burn_net;
mod candle_net;
mod plan;

use std::time::Instant;

pub struct Args {
    pub data: String,
    pub imgsz: usize,
    pub batch: usize,
    pub warmup: usize,
    pub steps: usize,
    pub lr: f64,
    pub fuse_silu: bool,
    pub check: bool,
}

/// Seconds of each phase of one step.
#[derive(Default, Clone, Copy)]
pub struct Phases {
    pub teacher_fwd: f64,
    pub student_fwd_loss: f64,
    pub backward: f64,
    pub update: f64,
}

pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

pub fn read_f32(path: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The bench's image batch, the same in every peer: value i is splitmix64(i) scaled to [0, 1)
/// (benches/peer_train_step.py computes the same numbers with numpy).
pub fn bench_input(n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = (i + 1).wrapping_mul(0x9e3779b97f4a7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// Loss and gradient norm of the first step (before any update), for comparing the peers.
#[derive(Default, Clone, Copy)]
pub struct First {
    pub loss: f64,
    pub grad_norm: f64,
}

/// Largest |a - r| over the tensor, relative to max |r| (the same measure as the PyTorch peer).
pub fn max_rel(a: &[f32], r: &[f32]) -> f64 {
    assert_eq!(a.len(), r.len());
    let scale = r.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12) as f64;
    a.iter().zip(r).fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64)) / scale
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let which = argv.first().cloned().unwrap_or_default();
    let mut a = Args {
        data: concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/train-step").to_string(),
        imgsz: 640,
        batch: 1,
        warmup: 2,
        steps: 5,
        lr: 1e-4,
        fuse_silu: true,
        check: true,
    };
    let mut i = 1;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--data" => a.data = v,
            "--imgsz" => a.imgsz = v.parse().unwrap(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--warmup" => a.warmup = v.parse().unwrap(),
            "--steps" => a.steps = v.parse().unwrap(),
            "--lr" => a.lr = v.parse().unwrap(),
            "--no-fuse-silu" => { a.fuse_silu = false; i += 1; continue; }
            "--no-check" => { a.check = false; i += 1; continue; }
            o => panic!("unknown option {o}"),
        }
        i += 2;
    }
    let graph = plan::Plan::load(&a.data, a.fuse_silu);
    let mut out = serde_json::Map::new();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    out.insert("peer".into(), which.clone().into());
    out.insert("rayon_num_threads".into(), threads.into());
    out.insert("imgsz".into(), a.imgsz.into());
    out.insert("batch".into(), a.batch.into());
    out.insert("fuse_silu".into(), a.fuse_silu.into());

    let (check, steps, loss, first): (Option<f64>, Vec<Phases>, f64, First) = match which.as_str() {
        "candle" => candle_net::run(&graph, &a),
        "burn-ndarray" => burn_net::run(&graph, &a, burn_net::ndarray_device()),
        "burn-flex" => burn_net::run(&graph, &a, burn::tensor::Device::flex()),
        o => panic!("first argument: candle | burn-ndarray | burn-flex, not {o:?}"),
    };
    if let Some(c) = check {
        out.insert("forward_vs_ort_max_rel".into(), c.into());
    }
    let steps = &steps[a.warmup..];
    let col = |f: fn(&Phases) -> f64| median(&mut steps.iter().map(f).collect::<Vec<_>>());
    out.insert("median_teacher_fwd_s".into(), col(|p| p.teacher_fwd).into());
    out.insert("median_student_fwd_loss_s".into(), col(|p| p.student_fwd_loss).into());
    out.insert("median_backward_s".into(), col(|p| p.backward).into());
    out.insert("median_update_s".into(), col(|p| p.update).into());
    let total = |p: &Phases| p.teacher_fwd + p.student_fwd_loss + p.backward + p.update;
    out.insert("median_step_s".into(), col(total).into());
    out.insert("steps_s".into(), steps.iter().map(total).collect::<Vec<_>>().into());
    out.insert("loss_first".into(), first.loss.into());
    out.insert("grad_norm_first".into(), first.grad_norm.into());
    out.insert("loss_last".into(), loss.into());
    out.insert("max_rss_mb".into(), peak_rss_mb().into());
    println!("{}", serde_json::Value::Object(out));
}
