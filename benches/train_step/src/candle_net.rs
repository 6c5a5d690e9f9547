//! The plan on candle-core (CPU): student convs as `Var`s, `Tensor::backward`, Adam by hand.

use crate::plan::{box_mask, Op, Plan};
use crate::{bench_input, max_rel, read_f32, secs, Args, Phases};
use candle_core::{Device, Result, Tensor, Var};
use std::time::Instant;

/// candle-core has no sigmoid op of its own (candle-nn's is a custom op): 1 / (1 + exp(-x)).
fn sigmoid(x: &Tensor) -> Result<Tensor> {
    x.neg()?.exp()?.affine(1.0, 1.0)?.recip()
}

fn forward(plan: &Plan, x: &Tensor, params: &[Tensor]) -> Result<Vec<Tensor>> {
    let last = plan.last_uses();
    let mut env: Vec<Option<Tensor>> = vec![None; plan.n_values];
    env[plan.input] = Some(x.clone());
    for (k, s) in plan.steps.iter().enumerate() {
        let v = |i: usize| env[s.ins[i]].as_ref().expect("value computed before use");
        let y = match &s.op {
            Op::Conv { w, b, stride, pad, dil, groups } => {
                let c = params[*b].dim(0)?;
                v(0).conv2d(&params[*w], *pad, *stride, *dil, *groups)?
                    .broadcast_add(&params[*b].reshape((1, c, 1, 1))?)?
            }
            Op::Silu => v(0).silu()?,
            Op::Sigmoid => sigmoid(v(0))?,
            Op::Mul => v(0).mul(v(1))?,
            Op::Add => v(0).add(v(1))?,
            Op::Concat { axis } => {
                let xs: Vec<&Tensor> = s.ins.iter().map(|&i| env[i].as_ref().unwrap()).collect();
                Tensor::cat(&xs, *axis)?
            }
            Op::MaxPoolSame { k } => {
                // candle's max_pool2d has no padding and no backward unless kernel == stride, so:
                // edge-replicate padding (the same result as -inf padding for a max whose window
                // always holds the edge value), then a separable max of shifted views.
                let r = k / 2;
                let (_, _, h, w) = v(0).dims4()?;
                let p = v(0).pad_with_same(2, r, r)?.pad_with_same(3, r, r)?;
                let mut m = p.narrow(2, 0, h)?;
                for d in 1..*k {
                    m = m.maximum(&p.narrow(2, d, h)?)?;
                }
                let mut o = m.narrow(3, 0, w)?;
                for d in 1..*k {
                    o = o.maximum(&m.narrow(3, d, w)?)?;
                }
                o
            }
            Op::Up2 => {
                // Not upsample_nearest2d: its backward in candle-core 0.11.1 assigns the input's
                // gradient (`*sum_grad = conv_sum`) instead of adding to it, which drops the other
                // consumers' gradient where the upsampled value is used twice (YOLOv5's model.10
                // and model.14 outputs are). A broadcast and a reshape give the same values and
                // a correct gradient.
                // (CANDLE_NATIVE_UPSAMPLE=1 uses it anyway, to show the difference.)
                let (n, c, h, w) = v(0).dims4()?;
                if std::env::var_os("CANDLE_NATIVE_UPSAMPLE").is_some() {
                    v(0).upsample_nearest2d(2 * h, 2 * w)?
                } else {
                v(0).reshape((n, c, h, 1, w, 1))?
                    .broadcast_as((n, c, h, 2, w, 2))?
                    .reshape((n, c, 2 * h, 2 * w))?
                }
            }
        };
        env[s.out] = Some(y);
        for &i in &last[k] {
            env[i] = None;
        }
    }
    Ok(plan.outputs.iter().map(|&o| env[o].take().unwrap()).collect())
}

/// MSE on box channels + BCE-with-logits on objectness/class channels against sigmoid(teacher),
/// each a mean over its elements, summed over the three heads.
fn loss(student: &[Tensor], teacher: &[Tensor]) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for (s, t) in student.iter().zip(teacher) {
        let (b, c, h, w) = s.dims4()?;
        let m = Tensor::from_vec(box_mask(c), (1, c, 1, 1), s.device())?;
        let inv = m.affine(-1.0, 1.0)?;
        let n_box = (b * h * w * (c / 85) * 4) as f64;
        let n_cls = (b * h * w * c) as f64 - n_box;
        let d = s.sub(t)?;
        let mse = d.sqr()?.broadcast_mul(&m)?.sum_all()?.affine(1.0 / n_box, 0.0)?;
        let p = sigmoid(t)?;
        // max(s, 0) - s p + log(1 + exp(-|s|))
        let bce = s.relu()?.sub(&s.mul(&p)?)?.add(&s.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
        let bce = bce.broadcast_mul(&inv)?.sum_all()?.affine(1.0 / n_cls, 0.0)?;
        let l = mse.add(&bce)?;
        total = Some(match total {
            None => l,
            Some(x) => x.add(&l)?,
        });
    }
    Ok(total.unwrap())
}

pub fn run(plan: &Plan, a: &Args) -> (Option<f64>, Vec<crate::Phases>, f64, crate::First) {
    run_inner(plan, a).unwrap()
}

fn run_inner(plan: &Plan, a: &Args) -> Result<(Option<f64>, Vec<Phases>, f64, crate::First)> {
    let dev = Device::Cpu;
    let mk = |w: &[f32], i: usize| Tensor::from_slice(plan.param_slice(w, i), plan.params[i].shape.as_slice(), &dev);
    let teacher: Vec<Tensor> = (0..plan.params.len()).map(|i| mk(&plan.teacher, i)).collect::<Result<_>>()?;
    let vars: Vec<Var> = (0..plan.params.len()).map(|i| mk(&plan.student, i).and_then(|t| Var::from_tensor(&t))).collect::<Result<_>>()?;

    let check = if a.check {
        let x = Tensor::from_vec(read_f32(&format!("{}/input_640.bin", plan.data)), (1, 3, 640, 640), &dev)?;
        let outs = forward(plan, &x, &teacher)?;
        let mut worst = 0f64;
        for (i, o) in outs.iter().enumerate() {
            let r = read_f32(&format!("{}/ref_640_{i}.bin", plan.data));
            worst = worst.max(max_rel(&o.flatten_all()?.to_vec1::<f32>()?, &r));
        }
        Some(worst)
    } else {
        None
    };

    let n = a.batch * 3 * a.imgsz * a.imgsz;
    let x = Tensor::from_vec(bench_input(n), (a.batch, 3, a.imgsz, a.imgsz), &dev)?;
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut m: Vec<Tensor> = vars.iter().map(|v| v.zeros_like()).collect::<Result<_>>()?;
    let mut vv: Vec<Tensor> = vars.iter().map(|v| v.zeros_like()).collect::<Result<_>>()?;
    let mut phases = Vec::new();
    let mut last_loss = f64::NAN;
    let mut first = crate::First::default();
    for step in 1..=(a.warmup + a.steps) {
        let t0 = Instant::now();
        let tout = forward(plan, &x, &teacher)?;
        let teacher_fwd = secs(t0);
        let t1 = Instant::now();
        let params: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let sout = forward(plan, &x, &params)?;
        let l = loss(&sout, &tout)?;
        last_loss = l.to_scalar::<f32>()? as f64;
        let student_fwd_loss = secs(t1);
        let t2 = Instant::now();
        let grads = l.backward()?;
        let backward = secs(t2);
        if step == 1 {
            let mut sq = 0f64;
            for var in &vars {
                sq += grads.get(var).unwrap().sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
            first = crate::First { loss: last_loss, grad_norm: sq.sqrt() };
        }
        let t3 = Instant::now();
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        for (i, var) in vars.iter().enumerate() {
            let g = grads.get(var).expect("every conv parameter has a gradient");
            m[i] = m[i].affine(b1, 0.0)?.add(&g.affine(1.0 - b1, 0.0)?)?;
            vv[i] = vv[i].affine(b2, 0.0)?.add(&g.sqr()?.affine(1.0 - b2, 0.0)?)?;
            let denom = vv[i].affine(1.0 / bc2, 0.0)?.sqrt()?.affine(1.0, eps)?;
            let upd = m[i].div(&denom)?.affine(a.lr / bc1, 0.0)?;
            var.set(&var.as_tensor().sub(&upd)?)?;
        }
        let update = secs(t3);
        phases.push(Phases { teacher_fwd, student_fwd_loss, backward, update });
    }
    Ok((check, phases, last_loss, first))
}
