//! The plan on burn (0.22's runtime-dispatched `Tensor<D>`): the teacher on the plain CPU
//! backend, the student on its autodiff decorator with `require_grad` conv parameters, Adam by hand.

use crate::plan::{box_mask, Op, Plan};
use crate::{bench_input, max_rel, read_f32, secs, Args, Phases};
use burn::tensor::activation::{relu, sigmoid, silu};
use burn::tensor::module::{conv2d, interpolate, max_pool2d};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};
use std::time::Instant;

// burn 0.22 deprecates the ndarray backend in favour of flex; both are measured.
#[allow(deprecated)]
pub fn ndarray_device() -> Device {
    Device::ndarray()
}

fn forward(plan: &Plan, x: Tensor<4>, params: &[Tensor<4>], biases: &[Tensor<1>]) -> Vec<Tensor<4>> {
    let last = plan.last_uses();
    let mut env: Vec<Option<Tensor<4>>> = vec![None; plan.n_values];
    env[plan.input] = Some(x);
    for (k, s) in plan.steps.iter().enumerate() {
        let v = |i: usize| env[s.ins[i]].clone().expect("value computed before use");
        let y = match &s.op {
            Op::Conv { w, b, stride, pad, dil, groups } => conv2d(
                v(0),
                params[*w].clone(),
                Some(biases[*b].clone()),
                ConvOptions::new([*stride; 2], [*pad; 2], [*dil; 2], *groups),
            ),
            Op::Silu => silu(v(0)),
            Op::Sigmoid => sigmoid(v(0)),
            Op::Mul => v(0).mul(v(1)),
            Op::Add => v(0).add(v(1)),
            Op::Concat { axis } => Tensor::cat(s.ins.iter().map(|&i| env[i].clone().unwrap()).collect(), *axis),
            Op::MaxPoolSame { k } => {
                max_pool2d(v(0), MaxPoolOptions::new([*k; 2]).with_stride([1, 1]).with_padding([k / 2; 2]))
            }
            Op::Up2 => {
                let [_, _, h, w] = v(0).dims();
                interpolate(
                    v(0),
                    InterpolateOptions::new(InterpolateMode::Nearest)
                        .with_align_corners(false)
                        .with_output_size([2 * h, 2 * w]),
                )
            }
        };
        env[s.out] = Some(y);
        for &i in &last[k] {
            env[i] = None;
        }
    }
    plan.outputs.iter().map(|&o| env[o].take().unwrap()).collect()
}

fn loss(student: &[Tensor<4>], teacher: &[Tensor<4>], dev: &Device) -> Tensor<1> {
    let mut total: Option<Tensor<1>> = None;
    for (s, t) in student.iter().zip(teacher) {
        let [b, c, h, w] = s.dims();
        let m = Tensor::<4>::from_data(TensorData::new(box_mask(c), [1, c, 1, 1]), dev);
        let inv = m.clone().neg().add_scalar(1.0);
        let n_box = (b * h * w * (c / 85) * 4) as f64;
        let n_cls = (b * h * w * c) as f64 - n_box;
        let d = s.clone().sub(t.clone());
        let mse = d.clone().mul(d).mul(m).sum().div_scalar(n_box);
        let p = sigmoid(t.clone());
        let bce = relu(s.clone()).sub(s.clone().mul(p)).add(s.clone().abs().neg().exp().log1p());
        let bce = bce.mul(inv).sum().div_scalar(n_cls);
        let l = mse.add(bce);
        total = Some(match total {
            None => l,
            Some(x) => x.add(l),
        });
    }
    total.unwrap()
}

pub fn run(plan: &Plan, a: &Args, base: Device) -> (Option<f64>, Vec<Phases>, f64, crate::First) {
    let ad = base.clone().autodiff();
    let shape4 = |i: usize| {
        let s = &plan.params[i].shape;
        [s[0], s[1], s[2], s[3]]
    };
    let is_w = |i: usize| plan.params[i].shape.len() == 4;
    let n = plan.params.len();
    // weights and biases live in one index space (graph.json's order); the unused kind is a dummy
    let dummy4 = || Tensor::<4>::zeros([1, 1, 1, 1], &base);
    let dummy1 = || Tensor::<1>::zeros([1], &base);
    let load4 = |w: &[f32], i: usize, d: &Device| {
        Tensor::<4>::from_data(TensorData::new(plan.param_slice(w, i).to_vec(), shape4(i)), d)
    };
    let load1 = |w: &[f32], i: usize, d: &Device| {
        Tensor::<1>::from_data(TensorData::new(plan.param_slice(w, i).to_vec(), [plan.params[i].shape[0]]), d)
    };
    let tw: Vec<Tensor<4>> = (0..n).map(|i| if is_w(i) { load4(&plan.teacher, i, &base) } else { dummy4() }).collect();
    let tb: Vec<Tensor<1>> = (0..n).map(|i| if is_w(i) { dummy1() } else { load1(&plan.teacher, i, &base) }).collect();
    let mut sw: Vec<Tensor<4>> = (0..n)
        .map(|i| if is_w(i) { load4(&plan.student, i, &base).autodiff().require_grad() } else { dummy4() })
        .collect();
    let mut sb: Vec<Tensor<1>> = (0..n)
        .map(|i| if is_w(i) { dummy1() } else { load1(&plan.student, i, &base).autodiff().require_grad() })
        .collect();

    let check = a.check.then(|| {
        let x = Tensor::<4>::from_data(TensorData::new(read_f32(&format!("{}/input_640.bin", plan.data)), [1, 3, 640, 640]), &base);
        let outs = forward(plan, x, &tw, &tb);
        let mut worst = 0f64;
        for (i, o) in outs.into_iter().enumerate() {
            let r = read_f32(&format!("{}/ref_640_{i}.bin", plan.data));
            worst = worst.max(max_rel(&o.into_data().try_to_vec::<f32>().unwrap(), &r));
        }
        worst
    });

    let x = Tensor::<4>::from_data(
        TensorData::new(bench_input(a.batch * 3 * a.imgsz * a.imgsz), [a.batch, 3, a.imgsz, a.imgsz]),
        &base,
    );
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut m4: Vec<Tensor<4>> = sw.iter().map(|t| t.clone().inner().zeros_like()).collect();
    let mut v4 = m4.clone();
    let mut m1: Vec<Tensor<1>> = sb.iter().map(|t| t.clone().inner().zeros_like()).collect();
    let mut v1 = m1.clone();
    let mut phases = Vec::new();
    let mut last_loss = f64::NAN;
    let mut first = crate::First::default();
    for step in 1..=(a.warmup + a.steps) {
        let t0 = Instant::now();
        let tout: Vec<Tensor<4>> = forward(plan, x.clone(), &tw, &tb);
        base.sync().unwrap();
        let teacher_fwd = secs(t0);
        let t1 = Instant::now();
        let tout: Vec<Tensor<4>> = tout.into_iter().map(|t| t.autodiff()).collect();
        let sout = forward(plan, x.clone().autodiff(), &sw, &sb);
        let l = loss(&sout, &tout, &ad);
        last_loss = l.clone().into_scalar::<f32>() as f64;
        let student_fwd_loss = secs(t1);
        let t2 = Instant::now();
        let grads = l.backward();
        base.sync().unwrap();
        let backward = secs(t2);
        if step == 1 {
            let mut sq = 0f64;
            for i in 0..n {
                sq += if is_w(i) {
                    let g = sw[i].grad(&grads).unwrap();
                    g.clone().mul(g).sum().into_scalar::<f32>() as f64
                } else {
                    let g = sb[i].grad(&grads).unwrap();
                    g.clone().mul(g).sum().into_scalar::<f32>() as f64
                };
            }
            first = crate::First { loss: last_loss, grad_norm: sq.sqrt() };
        }
        let t3 = Instant::now();
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        for i in 0..n {
            if is_w(i) {
                let g = sw[i].grad(&grads).expect("gradient of a conv weight");
                m4[i] = m4[i].clone().mul_scalar(b1).add(g.clone().mul_scalar(1.0 - b1));
                v4[i] = v4[i].clone().mul_scalar(b2).add(g.clone().mul(g).mul_scalar(1.0 - b2));
                let den = v4[i].clone().div_scalar(bc2).sqrt().add_scalar(eps);
                let w = sw[i].clone().inner().sub(m4[i].clone().div(den).mul_scalar(a.lr / bc1));
                sw[i] = w.autodiff().require_grad();
            } else {
                let g = sb[i].grad(&grads).expect("gradient of a conv bias");
                m1[i] = m1[i].clone().mul_scalar(b1).add(g.clone().mul_scalar(1.0 - b1));
                v1[i] = v1[i].clone().mul_scalar(b2).add(g.clone().mul(g).mul_scalar(1.0 - b2));
                let den = v1[i].clone().div_scalar(bc2).sqrt().add_scalar(eps);
                let w = sb[i].clone().inner().sub(m1[i].clone().div(den).mul_scalar(a.lr / bc1));
                sb[i] = w.autodiff().require_grad();
            }
        }
        base.sync().unwrap();
        let update = secs(t3);
        phases.push(Phases { teacher_fwd, student_fwd_loss, backward, update });
    }
    (check, phases, last_loss, first)
}
