"""PyTorch peer for one distillation training step on a YOLOv5 ONNX export (issue 19 item 6).

Builds a torch module from the ONNX graph itself (onnx + numpy, no converter): the trainable
part from the input `images` up to the three Detect-head Conv outputs (ops Conv, Sigmoid, Mul,
Add, Concat, MaxPool, Resize nearest). The Sigmoid->Mul pairs that spell SiLU run as F.silu, as
in YOLOv5's own PyTorch module (--no-fuse-silu keeps them as two ops).

One step, as shears' trainer will do it:
  teacher forward (no grad) -> student forward -> loss on the three raw head outputs
  (BCE-with-logits of objectness/class channels against the teacher's sigmoid, MSE on the box
  channels) -> backward -> Adam update of every Conv weight and bias.
Timed per phase; warm-up steps, then the median of --steps steps. Prints one JSON object.

Run in the bench venv (benches/setup-bench-venv.sh):
  target/bench-venv/bin/python benches/peer_train_step.py --imgsz 640 --batch 1
With --ref DIR (benches/train_step/export_graph.py's output) the teacher's head outputs on
DIR/input_640.bin are compared with onnxruntime's first.
"""
import argparse
import json
import os
import resource
import statistics
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

ALLOWED = {"Conv", "Sigmoid", "Mul", "Add", "Concat", "MaxPool", "Resize"}
NO = 85  # outputs per anchor: x, y, w, h, objectness, 80 classes


def attrs(n):
    return {a.name: helper.get_attribute_value(a) for a in n.attribute}


class OnnxNet(torch.nn.Module):
    """The graph from `images` to the three head convs, run node by node."""

    def __init__(self, path, fuse_silu=True):
        super().__init__()
        model = onnx.load(path)
        g = model.graph
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        consumers, producer = {}, {}
        for n in g.node:
            for o in n.output:
                producer[o] = n
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        heads = [n for n in g.node if n.op_type == "Conv"
                 and any(c.op_type == "Reshape" for c in consumers.get(n.output[0], []))]
        assert len(heads) == 3
        need, stack = set(), [h.output[0] for h in heads]
        while stack:
            t = stack.pop()
            n = producer.get(t)
            if n is None or n.name in need:
                continue
            need.add(n.name)
            for i in (n.input[:1] if n.op_type == "Resize" else n.input):
                if i and i not in inits:
                    stack.append(i)
        nodes = [n for n in g.node if n.name in need]
        assert not ({n.op_type for n in nodes} - ALLOWED)
        self.input = g.input[0].name
        self.outputs = [h.output[0] for h in heads]
        self.params = torch.nn.ParameterDict()
        self.plan = []
        skip = set()
        for n in nodes:
            if n.name in skip:
                continue
            a = attrs(n)
            if n.op_type == "Conv":
                key = f"c{len(self.params) // 2}"
                self.params[key + "w"] = torch.nn.Parameter(torch.from_numpy(inits[n.input[1]].copy()))
                self.params[key + "b"] = torch.nn.Parameter(torch.from_numpy(inits[n.input[2]].copy()))
                p = a.get("pads", [0, 0, 0, 0])
                assert p[0] == p[2] and p[1] == p[3]
                self.plan.append(("conv", [n.input[0]], n.output[0],
                                  dict(key=key, stride=tuple(a.get("strides", [1, 1])), padding=(p[0], p[1]),
                                       dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1))))
            elif n.op_type == "Sigmoid":
                muls = consumers.get(n.output[0], [])
                if (fuse_silu and len(muls) == 1 and muls[0].op_type == "Mul"
                        and set(muls[0].input) == {n.input[0], n.output[0]}):
                    self.plan.append(("silu", [n.input[0]], muls[0].output[0], {}))
                    skip.add(muls[0].name)
                else:
                    self.plan.append(("sigmoid", [n.input[0]], n.output[0], {}))
            elif n.op_type in ("Mul", "Add"):
                self.plan.append((n.op_type.lower(), list(n.input), n.output[0], {}))
            elif n.op_type == "Concat":
                self.plan.append(("concat", list(n.input), n.output[0], dict(axis=a["axis"])))
            elif n.op_type == "MaxPool":
                p = a.get("pads", [0, 0, 0, 0])
                assert p[0] == p[2] and p[1] == p[3] and not a.get("ceil_mode", 0)
                self.plan.append(("maxpool", [n.input[0]], n.output[0],
                                  dict(kernel_size=tuple(a["kernel_shape"]), stride=tuple(a.get("strides", [1, 1])),
                                       padding=(p[0], p[1]))))
            elif n.op_type == "Resize":
                assert a["mode"] == b"nearest"
                # YOLOv5's Upsample is nearest x2 (the op12 export spells it as fixed sizes)
                self.plan.append(("up2", [n.input[0]], n.output[0], {}))
        # last use of each value, to drop references early (as a module's locals would)
        self.last = {}
        for k, (_, ins, _, _) in enumerate(self.plan):
            for i in ins:
                self.last[i] = k

    def forward(self, x):
        env = {self.input: x}
        for k, (op, ins, out, a) in enumerate(self.plan):
            v = [env[i] for i in ins]
            if op == "conv":
                y = F.conv2d(v[0], self.params[a["key"] + "w"], self.params[a["key"] + "b"], a["stride"],
                             a["padding"], a["dilation"], a["groups"])
            elif op == "silu":
                y = F.silu(v[0])
            elif op == "sigmoid":
                y = torch.sigmoid(v[0])
            elif op == "mul":
                y = v[0] * v[1]
            elif op == "add":
                y = v[0] + v[1]
            elif op == "concat":
                y = torch.cat(v, dim=a["axis"])
            elif op == "maxpool":
                y = F.max_pool2d(v[0], a["kernel_size"], a["stride"], a["padding"])
            elif op == "up2":
                y = F.interpolate(v[0], scale_factor=2.0, mode="nearest")
            env[out] = y
            for i in ins:
                if self.last.get(i) == k and i not in self.outputs:
                    env.pop(i, None)
        return [env[o] for o in self.outputs]


def bench_input(n):
    """The bench's image batch, the same in every peer: value i is splitmix64(i) scaled to [0, 1)
    (benches/train_step/src/main.rs computes the same numbers)."""
    with np.errstate(over="ignore"):
        z = (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return ((z >> np.uint64(40)).astype(np.float64) / float(1 << 24)).astype(np.float32)


def distill_loss(student_outs, teacher_outs):
    box, cls = 0.0, 0.0
    for s, t in zip(student_outs, teacher_outs):
        b, c, h, w = s.shape
        s = s.view(b, c // NO, NO, h, w)
        t = t.view(b, c // NO, NO, h, w)
        box = box + F.mse_loss(s[:, :, :4], t[:, :, :4])
        cls = cls + F.binary_cross_entropy_with_logits(s[:, :, 4:], torch.sigmoid(t[:, :, 4:]))
    return box + cls


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--teacher", default="/work/shared/fixtures/models/yolov5n_op12.onnx")
    p.add_argument("--student", default="/work/shared/fixtures/models/yolov5n_pruned30_op12.onnx")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--no-fuse-silu", action="store_true")
    p.add_argument("--ref", help="export_graph.py output dir: check the teacher's head outputs against onnxruntime's")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    fuse = not a.no_fuse_silu
    teacher = OnnxNet(a.teacher, fuse).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    student = OnnxNet(a.student, fuse).train()
    result = {"peer": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "imgsz": a.imgsz, "batch": a.batch, "fuse_silu": fuse}

    if a.ref:
        x = torch.from_numpy(np.fromfile(os.path.join(a.ref, "input_640.bin"), dtype="<f4").reshape(1, 3, 640, 640))
        with torch.no_grad():
            outs = teacher(x)
        worst = 0.0
        for i, o in enumerate(outs):
            r = np.fromfile(os.path.join(a.ref, f"ref_640_{i}.bin"), dtype="<f4").reshape(o.shape)
            worst = max(worst, float(np.abs(o.numpy() - r).max() / max(1e-12, np.abs(r).max())))
        result["forward_vs_ort_max_rel"] = worst

    opt = torch.optim.Adam(student.parameters(), lr=a.lr)
    x = torch.from_numpy(bench_input(a.batch * 3 * a.imgsz * a.imgsz).reshape(a.batch, 3, a.imgsz, a.imgsz))
    phases = {"teacher_fwd": [], "student_fwd_loss": [], "backward": [], "update": [], "step": []}
    for k in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            tout = teacher(x)
        t1 = time.perf_counter()
        loss = distill_loss(student(x), tout)
        result["loss_last"] = loss.detach().item()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        if k == 0:
            result["loss_first"] = result["loss_last"]
            result["grad_norm_first"] = float(torch.sqrt(sum((q.grad.double() ** 2).sum() for q in student.parameters())))
            t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if k >= a.warmup:
            for name, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
                phases[name].append(v)
    result.update({f"median_{k}_s": statistics.median(v) for k, v in phases.items()})
    result["steps_s"] = phases["step"]
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
