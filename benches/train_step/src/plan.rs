//! The graph of export_graph.py's graph.json as a flat plan over numbered values.

use serde_json::Value;

pub enum Op {
    /// Conv with parameters `w`, `b` (indices into `Plan::params`); symmetric padding only.
    Conv { w: usize, b: usize, stride: usize, pad: usize, dil: usize, groups: usize },
    /// Sigmoid followed by Mul(x, sigmoid(x)), fused when asked.
    Silu,
    Sigmoid,
    Mul,
    Add,
    Concat { axis: usize },
    /// Max pooling with a square kernel, stride 1, padding k/2 (YOLOv5's SPPF).
    MaxPoolSame { k: usize },
    /// Resize nearest x2.
    Up2,
}

pub struct Step {
    pub op: Op,
    pub ins: Vec<usize>,
    pub out: usize,
}

pub struct Param {
    pub shape: Vec<usize>,
    pub offset: usize,
}

pub struct Plan {
    pub steps: Vec<Step>,
    pub n_values: usize,
    pub input: usize,
    pub outputs: Vec<usize>,
    pub params: Vec<Param>,
    pub teacher: Vec<f32>,
    pub student: Vec<f32>,
    pub data: String,
}

fn ints(v: &Value) -> Vec<usize> {
    v.as_array().map(|a| a.iter().map(|x| x.as_i64().unwrap() as usize).collect()).unwrap_or_default()
}

impl Plan {
    pub fn load(dir: &str, fuse_silu: bool) -> Plan {
        let text = std::fs::read_to_string(format!("{dir}/graph.json"))
            .unwrap_or_else(|e| panic!("{dir}/graph.json: {e} (run export_graph.py first)"));
        let g: Value = serde_json::from_str(&text).unwrap();
        let mut names: std::collections::HashMap<String, usize> = Default::default();
        let mut id = |s: &str| {
            let n = names.len();
            *names.entry(s.to_string()).or_insert(n)
        };
        let input = id(g["input"].as_str().unwrap());
        let param_index: std::collections::HashMap<String, usize> = g["params"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, p)| (p["name"].as_str().unwrap().to_string(), i))
            .collect();
        let params = g["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Param { shape: ints(&p["shape"]), offset: p["offset"].as_u64().unwrap() as usize })
            .collect();
        let nodes = g["nodes"].as_array().unwrap();
        let strs = |v: &Value| -> Vec<String> {
            v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
        };
        // consumers of each value name
        let mut consumers: std::collections::HashMap<String, Vec<usize>> = Default::default();
        for (k, n) in nodes.iter().enumerate() {
            for i in strs(&n["inputs"]) {
                consumers.entry(i).or_default().push(k);
            }
        }
        let mut skip = vec![false; nodes.len()];
        let mut steps = Vec::new();
        for (k, n) in nodes.iter().enumerate() {
            if skip[k] {
                continue;
            }
            let ins = strs(&n["inputs"]);
            let outs = strs(&n["outputs"]);
            let at = &n["attrs"];
            let (op, ins, out) = match n["op"].as_str().unwrap() {
                "Conv" => {
                    let p = ints(&at["pads"]);
                    let s = ints(&at["strides"]);
                    let d = ints(&at["dilations"]);
                    assert!(p.iter().all(|&x| x == p[0]) && s[0] == s[1] && (d.is_empty() || d[0] == d[1]));
                    let op = Op::Conv {
                        w: param_index[&ins[1]],
                        b: param_index[&ins[2]],
                        stride: s[0],
                        pad: p[0],
                        dil: d.first().copied().unwrap_or(1),
                        groups: at["group"].as_u64().unwrap_or(1) as usize,
                    };
                    (op, vec![id(&ins[0])], id(&outs[0]))
                }
                "Sigmoid" => {
                    let c = consumers.get(&outs[0]).cloned().unwrap_or_default();
                    let fusable = c.len() == 1 && nodes[c[0]]["op"] == "Mul" && {
                        let mi = strs(&nodes[c[0]]["inputs"]);
                        mi.len() == 2 && mi.contains(&ins[0]) && mi.contains(&outs[0])
                    };
                    if fuse_silu && fusable {
                        skip[c[0]] = true;
                        let mo = strs(&nodes[c[0]]["outputs"]);
                        (Op::Silu, vec![id(&ins[0])], id(&mo[0]))
                    } else {
                        (Op::Sigmoid, vec![id(&ins[0])], id(&outs[0]))
                    }
                }
                "Mul" => (Op::Mul, ins.iter().map(|s| id(s)).collect(), id(&outs[0])),
                "Add" => (Op::Add, ins.iter().map(|s| id(s)).collect(), id(&outs[0])),
                "Concat" => {
                    let axis = at["axis"].as_i64().unwrap();
                    assert!(axis == 1, "Concat on axis {axis}");
                    (Op::Concat { axis: 1 }, ins.iter().map(|s| id(s)).collect(), id(&outs[0]))
                }
                "MaxPool" => {
                    let k = ints(&at["kernel_shape"]);
                    let p = ints(&at["pads"]);
                    let s = ints(&at["strides"]);
                    assert!(k[0] == k[1] && s == vec![1, 1] && p.iter().all(|&x| x == k[0] / 2));
                    (Op::MaxPoolSame { k: k[0] }, vec![id(&ins[0])], id(&outs[0]))
                }
                "Resize" => (Op::Up2, vec![id(&ins[0])], id(&outs[0])),
                o => panic!("op {o} is outside the trainable set"),
            };
            steps.push(Step { op, ins, out });
        }
        let outputs = strs(&g["outputs"]).iter().map(|s| id(s)).collect();
        Plan {
            steps,
            n_values: names.len(),
            input,
            outputs,
            params,
            teacher: crate::read_f32(&format!("{dir}/teacher.bin")),
            student: crate::read_f32(&format!("{dir}/student.bin")),
            data: dir.to_string(),
        }
    }

    /// For each step, the values whose last use it is (to free them early).
    pub fn last_uses(&self) -> Vec<Vec<usize>> {
        let mut last = vec![usize::MAX; self.n_values];
        for (k, s) in self.steps.iter().enumerate() {
            for &i in &s.ins {
                last[i] = k;
            }
        }
        let mut per = vec![Vec::new(); self.steps.len()];
        for (v, &k) in last.iter().enumerate() {
            if k != usize::MAX && !self.outputs.contains(&v) {
                per[k].push(v);
            }
        }
        per
    }

    pub fn param_slice<'a>(&self, weights: &'a [f32], i: usize) -> &'a [f32] {
        let p = &self.params[i];
        let n: usize = p.shape.iter().product();
        &weights[p.offset..p.offset + n]
    }
}

/// Channel masks of a head output with `c` channels (3 anchors x 85): 1 on box channels.
pub fn box_mask(c: usize) -> Vec<f32> {
    (0..c).map(|i| if i % 85 < 4 { 1.0 } else { 0.0 }).collect()
}
