//! Metric objects (`lit::metrics`) against torchmetrics on random inputs (several seeds, several
//! batches, edge cases), their state, errors, and logging them with `cx.log` in the Trainer,
//! on one process and two.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use lit::data::Batches;
use lit::metrics::{
    Accuracy, Auroc, Average, ConfusionMatrix, F1Score, FBetaScore, MaxMetric, MeanAbsoluteError, MeanMetric,
    MeanSquaredError, Metric, MetricCollection, MetricError, MinMetric, MultiOutput, NanStrategy, Normalize, Precision,
    R2Score, Recall, StatScores, SumMetric, Update,
};
use lit::prelude::*;

use crate::common::{quiet, temp_dir};

// ---------------------------------------------------------------------------------------------
// Random inputs from a generator of the test's own (libtorch's is shared by parallel tests).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn rand(&mut self, shape: &[i64]) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        Tensor::from_slice(&(0..n).map(|_| self.uniform()).collect::<Vec<_>>()).view(shape)
    }
    fn randn(&mut self, shape: &[i64]) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        let normal = |r: &mut Rng| {
            let (u, v) = (r.uniform().max(1e-7) as f64, r.uniform() as f64);
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        };
        Tensor::from_slice(&(0..n).map(|_| normal(self)).collect::<Vec<_>>()).view(shape)
    }
    fn randint(&mut self, low: i64, high: i64, shape: &[i64]) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        let span = (high - low) as u64;
        Tensor::from_slice(&(0..n).map(|_| low + (self.next() % span) as i64).collect::<Vec<_>>()).view(shape)
    }
}

type Data = Vec<(Tensor, Tensor)>;

/// Three batches of uneven sizes, each from `make(rng, batch_size)`.
fn batches(seed: u64, mut make: impl FnMut(&mut Rng, i64) -> (Tensor, Tensor)) -> Data {
    let mut rng = Rng(seed * 7919 + 13);
    [16, 23, 9].into_iter().map(|n| make(&mut rng, n)).collect()
}

/// The datasets of one seed, by name.
fn datasets(seed: u64) -> BTreeMap<String, Data> {
    let c = 5; // classes
    let l = 4; // labels
    let mut d = BTreeMap::new();
    let mut add = |name: &str, data: Data| d.insert(format!("{name}{seed}"), data);
    add("bin_prob", batches(seed, |r, n| (r.rand(&[n]), r.randint(0, 2, &[n]))));
    add("bin_logit", batches(seed, |r, n| (r.randn(&[n]) * 2.0, r.randint(0, 2, &[n]))));
    add("bin_label", batches(seed, |r, n| (r.randint(0, 2, &[n]), r.randint(0, 2, &[n]))));
    add("bin_md", batches(seed, |r, n| (r.rand(&[n, 3]), r.randint(0, 2, &[n, 3]))));
    add("bin_ign", batches(seed, |r, n| (r.rand(&[n]), r.randint(-1, 2, &[n]))));
    // Few distinct scores: ties everywhere.
    add("bin_tie", batches(seed, |r, n| ((r.rand(&[n]) * 5.0).round() / 5.0, r.randint(0, 2, &[n]))));
    add("mc_logit", batches(seed, |r, n| (r.randn(&[n, c]), r.randint(0, c, &[n]))));
    // Class 4 never predicted and never a target (left out of macro averages).
    let never = |r: &mut Rng, n: i64| {
        let p = r.randn(&[n, c]);
        let _ = p.narrow(1, 4, 1).fill_(-100.0);
        p
    };
    add("mc_absent", batches(seed, |r, n| (never(r, n), r.randint(0, c - 1, &[n]))));
    // Class 4 never predicted, but a target.
    add("mc_never", batches(seed, |r, n| (never(r, n), r.randint(0, c, &[n]))));
    add("mc_label", batches(seed, |r, n| (r.randint(0, c, &[n]), r.randint(0, c, &[n]))));
    add("mc_md", batches(seed, |r, n| (r.randn(&[n, c, 3]), r.randint(0, c, &[n, 3]))));
    add("mc_ign", batches(seed, |r, n| (r.randn(&[n, c]), r.randint(-1, c, &[n]))));
    add("mc_tie", batches(seed, |r, n| ((r.rand(&[n, c]) * 4.0).round() / 4.0, r.randint(0, c, &[n]))));
    add("ml_prob", batches(seed, |r, n| (r.rand(&[n, l]), r.randint(0, 2, &[n, l]))));
    add("ml_logit", batches(seed, |r, n| (r.randn(&[n, l]), r.randint(0, 2, &[n, l]))));
    add("ml_ign", batches(seed, |r, n| (r.rand(&[n, l]), r.randint(-1, 2, &[n, l]))));
    add("reg", batches(seed, |r, n| (r.randn(&[n]), r.randn(&[n]) * 0.5 + 0.3)));
    add("reg2", batches(seed, |r, n| (r.randn(&[n, 2]), r.randn(&[n, 2]) * 2.0)));
    add("agg", batches(seed, |r, n| (r.randn(&[n]) * 3.0, r.rand(&[n]))));
    add(
        "agg_nan",
        batches(seed, |r, n| {
            let v = r.randn(&[n]);
            let nan = r.rand(&[n]).lt(0.2);
            (v.masked_fill(&nan, f64::NAN), r.rand(&[n]))
        }),
    );
    d
}

// ---------------------------------------------------------------------------------------------
// Cases: our value and the torchmetrics call that should give it.

struct Case {
    name: String,
    data: String,
    ctor: String,
    /// "pt": update(preds, target) (or forward); "p": an aggregator's forward(values); "pw" and
    /// "pc": update(values, weights) or update(values), then compute, for every batch.
    call: &'static str,
    forward: bool,
    ours: Vec<Option<f64>>,
}

fn values(t: &Tensor) -> Vec<Option<f64>> {
    let v: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    v.into_iter().map(|x| (!x.is_nan()).then_some(x)).collect()
}

struct Cases<'a> {
    data: &'a BTreeMap<String, Data>,
    list: Vec<Case>,
}

impl Cases<'_> {
    /// A metric updated (or, with `forward`, called) on every batch of `data`, then computed.
    fn add(&mut self, data: &str, ctor: &str, metric: impl Update, forward: bool) {
        let mut ours = Vec::new();
        for (p, t) in &self.data[data] {
            if forward {
                ours.extend(values(&metric.forward(p, t).unwrap()));
            } else {
                metric.update(p, t).unwrap_or_else(|e| panic!("{data} {ctor}: {e}"));
            }
        }
        ours.extend(values(&metric.compute().unwrap_or_else(|e| panic!("{data} {ctor}: {e}"))));
        let name = format!("{data} {ctor}{}", if forward { " forward" } else { "" });
        self.list.push(Case { name, data: data.into(), ctor: ctor.into(), call: "pt", forward, ours });
    }

    /// An aggregator, given a batch's values (and weights with `call` "pw").
    fn add_agg(&mut self, data: &str, ctor: &str, call: &'static str, update: impl Fn(&Tensor, &Tensor) -> Tensor) {
        let mut ours = Vec::new();
        for (v, w) in &self.data[data] {
            ours.extend(values(&update(v, w)));
        }
        let name = format!("{data} {ctor} {call}");
        self.list.push(Case { name, data: data.into(), ctor: ctor.into(), call, forward: true, ours });
    }
}

const AVERAGES: [(Average, &str); 4] = [
    (Average::Micro, "'micro'"),
    (Average::Macro, "'macro'"),
    (Average::Weighted, "'weighted'"),
    (Average::None, "'none'"),
];

fn classification_cases(c: &mut Cases<'_>, s: u64) {
    let d = |name: &str| format!("{name}{s}");
    for data in ["bin_prob", "bin_logit", "bin_label", "bin_md"].map(d) {
        c.add(&data, "BinaryAccuracy()", Accuracy::binary(), false);
        c.add(&data, "BinaryPrecision()", Precision::binary(), false);
        c.add(&data, "BinaryRecall()", Recall::binary(), false);
        c.add(&data, "BinaryF1Score()", F1Score::binary(), false);
        c.add(&data, "BinaryFBetaScore(beta=0.5)", FBetaScore::binary(0.5), false);
        c.add(&data, "BinaryStatScores()", StatScores::binary(), false);
        c.add(&data, "BinaryConfusionMatrix()", ConfusionMatrix::binary(), false);
        c.add(
            &data,
            "BinaryConfusionMatrix(normalize='true')",
            ConfusionMatrix::binary().normalize(Normalize::True),
            false,
        );
        c.add(&data, "BinaryAccuracy(threshold=0.3)", Accuracy::binary().threshold(0.3), false);
        c.add(&data, "BinaryAccuracy()", Accuracy::binary(), true);
        if data.starts_with("bin_label") {
            continue;
        }
        c.add(&data, "BinaryAUROC()", Auroc::binary(), false);
        c.add(&data, "BinaryAUROC(max_fpr=0.3)", Auroc::binary().max_fpr(0.3), false);
    }
    let data = d("bin_ign");
    c.add(&data, "BinaryAccuracy(ignore_index=-1)", Accuracy::binary().ignore_index(-1), false);
    c.add(&data, "BinaryF1Score(ignore_index=-1)", F1Score::binary().ignore_index(-1), false);
    c.add(&data, "BinaryConfusionMatrix(ignore_index=-1)", ConfusionMatrix::binary().ignore_index(-1), false);
    c.add(&data, "BinaryAUROC(ignore_index=-1)", Auroc::binary().ignore_index(-1), false);
    let data = d("bin_tie");
    c.add(&data, "BinaryAUROC()", Auroc::binary(), false);
    c.add(&data, "BinaryAUROC(max_fpr=0.5)", Auroc::binary().max_fpr(0.5), false);
    c.add(&data, "BinaryAUROC()", Auroc::binary(), true);

    for data in ["mc_logit", "mc_absent", "mc_never", "mc_md", "mc_label"].map(d) {
        let scores = !data.starts_with("mc_label");
        for (avg, py) in AVERAGES {
            c.add(&data, &format!("MulticlassAccuracy(5, average={py})"), Accuracy::multiclass(5).average(avg), false);
            c.add(
                &data,
                &format!("MulticlassPrecision(5, average={py})"),
                Precision::multiclass(5).average(avg),
                false,
            );
            c.add(&data, &format!("MulticlassRecall(5, average={py})"), Recall::multiclass(5).average(avg), false);
            c.add(&data, &format!("MulticlassF1Score(5, average={py})"), F1Score::multiclass(5).average(avg), false);
            c.add(
                &data,
                &format!("MulticlassStatScores(5, average={py})"),
                StatScores::multiclass(5).average(avg),
                false,
            );
            if scores {
                let k = |ctor: &str| format!("{ctor}(5, average={py}, top_k=2)");
                c.add(&data, &k("MulticlassAccuracy"), Accuracy::multiclass(5).average(avg).top_k(2), false);
                c.add(&data, &k("MulticlassPrecision"), Precision::multiclass(5).average(avg).top_k(2), false);
                c.add(&data, &k("MulticlassRecall"), Recall::multiclass(5).average(avg).top_k(2), false);
                c.add(&data, &k("MulticlassF1Score"), F1Score::multiclass(5).average(avg).top_k(2), false);
            }
        }
        c.add(
            &data,
            "MulticlassFBetaScore(beta=2.0, num_classes=5, average='macro')",
            FBetaScore::multiclass(5, 2.0).average(Average::Macro),
            false,
        );
        c.add(
            &data,
            "MulticlassPrecision(5, average='macro', zero_division=1)",
            Precision::multiclass(5).average(Average::Macro).zero_division(1.0),
            false,
        );
        c.add(&data, "MulticlassAccuracy(5, average='macro')", Accuracy::multiclass(5).average(Average::Macro), true);
        c.add(&data, "MulticlassConfusionMatrix(5)", ConfusionMatrix::multiclass(5), false);
        for (n, py) in [(Normalize::True, "'true'"), (Normalize::Pred, "'pred'"), (Normalize::All, "'all'")] {
            c.add(
                &data,
                &format!("MulticlassConfusionMatrix(5, normalize={py})"),
                ConfusionMatrix::multiclass(5).normalize(n),
                false,
            );
        }
        if scores {
            c.add(&data, "MulticlassAUROC(5)", Auroc::multiclass(5), false);
            c.add(
                &data,
                "MulticlassAUROC(5, average='weighted')",
                Auroc::multiclass(5).average(Average::Weighted),
                false,
            );
            c.add(&data, "MulticlassAUROC(5, average='none')", Auroc::multiclass(5).average(Average::None), false);
        }
    }
    let data = d("mc_ign");
    c.add(
        &data,
        "MulticlassAccuracy(5, average='macro', ignore_index=-1)",
        Accuracy::multiclass(5).average(Average::Macro).ignore_index(-1),
        false,
    );
    c.add(
        &data,
        "MulticlassF1Score(5, average='weighted', ignore_index=-1)",
        F1Score::multiclass(5).average(Average::Weighted).ignore_index(-1),
        false,
    );
    c.add(
        &data,
        "MulticlassRecall(5, average='macro', top_k=2, ignore_index=-1)",
        Recall::multiclass(5).average(Average::Macro).top_k(2).ignore_index(-1),
        false,
    );
    c.add(
        &data,
        "MulticlassConfusionMatrix(5, ignore_index=-1)",
        ConfusionMatrix::multiclass(5).ignore_index(-1),
        false,
    );
    c.add(&data, "MulticlassAUROC(5, ignore_index=-1)", Auroc::multiclass(5).ignore_index(-1), false);
    let data = d("mc_tie");
    c.add(&data, "MulticlassAUROC(5)", Auroc::multiclass(5), false);
    c.add(&data, "MulticlassAUROC(5, average='weighted')", Auroc::multiclass(5).average(Average::Weighted), false);
    c.add(&data, "MulticlassAUROC(5, average='none')", Auroc::multiclass(5).average(Average::None), false);
    c.add(&data, "MulticlassAccuracy(5, top_k=3, average='micro')", Accuracy::multiclass(5).top_k(3), false);

    for data in ["ml_prob", "ml_logit"].map(d) {
        for (avg, py) in AVERAGES {
            c.add(&data, &format!("MultilabelAccuracy(4, average={py})"), Accuracy::multilabel(4).average(avg), false);
            c.add(
                &data,
                &format!("MultilabelPrecision(4, average={py})"),
                Precision::multilabel(4).average(avg),
                false,
            );
            c.add(&data, &format!("MultilabelRecall(4, average={py})"), Recall::multilabel(4).average(avg), false);
            c.add(&data, &format!("MultilabelF1Score(4, average={py})"), F1Score::multilabel(4).average(avg), false);
            c.add(
                &data,
                &format!("MultilabelStatScores(4, average={py})"),
                StatScores::multilabel(4).average(avg),
                false,
            );
            c.add(&data, &format!("MultilabelAUROC(4, average={py})"), Auroc::multilabel(4).average(avg), false);
        }
        c.add(
            &data,
            "MultilabelAccuracy(4, threshold=0.7)",
            Accuracy::multilabel(4).threshold(0.7).average(Average::Macro),
            false,
        );
        c.add(&data, "MultilabelConfusionMatrix(4)", ConfusionMatrix::multilabel(4), false);
        c.add(
            &data,
            "MultilabelConfusionMatrix(4, normalize='true')",
            ConfusionMatrix::multilabel(4).normalize(Normalize::True),
            false,
        );
        c.add(&data, "MultilabelF1Score(4)", F1Score::multilabel(4).average(Average::Macro), true);
    }
    let data = d("ml_ign");
    c.add(
        &data,
        "MultilabelAccuracy(4, ignore_index=-1)",
        Accuracy::multilabel(4).average(Average::Macro).ignore_index(-1),
        false,
    );
    c.add(
        &data,
        "MultilabelF1Score(4, average='micro', ignore_index=-1)",
        F1Score::multilabel(4).ignore_index(-1),
        false,
    );
    c.add(
        &data,
        "MultilabelConfusionMatrix(4, ignore_index=-1)",
        ConfusionMatrix::multilabel(4).ignore_index(-1),
        false,
    );
    c.add(&data, "MultilabelAUROC(4, ignore_index=-1)", Auroc::multilabel(4).ignore_index(-1), false);
    c.add(
        &data,
        "MultilabelAUROC(4, average='micro', ignore_index=-1)",
        Auroc::multilabel(4).average(Average::Micro).ignore_index(-1),
        false,
    );

    // The task wrappers' defaults: micro averages.
    c.add(&d("mc_logit"), "torchmetrics.Accuracy(task='multiclass', num_classes=5)", Accuracy::multiclass(5), false);
    c.add(&d("mc_logit"), "torchmetrics.F1Score(task='multiclass', num_classes=5)", F1Score::multiclass(5), false);
    c.add(&d("mc_logit"), "torchmetrics.AUROC(task='multiclass', num_classes=5)", Auroc::multiclass(5), false);
}

fn regression_cases(c: &mut Cases<'_>, s: u64) {
    let (reg, reg2) = (format!("reg{s}"), format!("reg2{s}"));
    c.add(&reg, "MeanSquaredError()", MeanSquaredError::new(), false);
    c.add(&reg, "MeanSquaredError(squared=False)", MeanSquaredError::new().squared(false), false);
    c.add(&reg, "MeanAbsoluteError()", MeanAbsoluteError::new(), false);
    c.add(&reg, "R2Score()", R2Score::new(), false);
    c.add(&reg, "R2Score(adjusted=2)", R2Score::new().adjusted(2), false);
    c.add(&reg, "MeanSquaredError()", MeanSquaredError::new(), true);
    c.add(&reg2, "MeanSquaredError(num_outputs=2)", MeanSquaredError::new().num_outputs(2), false);
    c.add(&reg2, "MeanAbsoluteError(num_outputs=2)", MeanAbsoluteError::new().num_outputs(2), false);
    c.add(&reg2, "R2Score()", R2Score::new(), false);
    c.add(&reg2, "R2Score(multioutput='raw_values')", R2Score::new().multioutput(MultiOutput::RawValues), false);
    c.add(
        &reg2,
        "R2Score(multioutput='variance_weighted')",
        R2Score::new().multioutput(MultiOutput::VarianceWeighted),
        false,
    );
}

fn aggregation_cases(c: &mut Cases<'_>, s: u64) {
    let (agg, nan) = (format!("agg{s}"), format!("agg_nan{s}"));
    let mean = MeanMetric::new();
    c.add_agg(&agg, "MeanMetric()", "p", |v, _| mean.forward(v).unwrap());
    let mean = MeanMetric::new();
    c.add_agg(&agg, "MeanMetric()", "pw", |v, w| {
        mean.update_weighted(v, w).unwrap();
        mean.compute().unwrap()
    });
    let sum = SumMetric::new();
    c.add_agg(&agg, "SumMetric()", "p", |v, _| sum.forward(v).unwrap());
    let max = MaxMetric::new();
    c.add_agg(&agg, "MaxMetric()", "p", |v, _| max.forward(v).unwrap());
    let min = MinMetric::new();
    c.add_agg(&agg, "MinMetric()", "p", |v, _| min.forward(v).unwrap());
    let mean = MeanMetric::new().nan_strategy(NanStrategy::Ignore);
    c.add_agg(&nan, "MeanMetric(nan_strategy='ignore')", "p", |v, _| mean.forward(v).unwrap());
    let sum = SumMetric::new().nan_strategy(NanStrategy::Replace(0.5));
    c.add_agg(&nan, "SumMetric(nan_strategy=0.5)", "p", |v, _| sum.forward(v).unwrap());
    let max = MaxMetric::new().nan_strategy(NanStrategy::Ignore);
    c.add_agg(&nan, "MaxMetric(nan_strategy='ignore')", "pc", |v, _| {
        max.update(v).unwrap();
        max.compute().unwrap()
    });
}

/// Runs every case's torchmetrics call in one Python process; its results, by case name.
fn torchmetrics(data: &BTreeMap<String, Data>, cases: &[Case], dir: &Path) -> BTreeMap<String, Vec<Option<f64>>> {
    let mut tensors = Vec::new();
    for (name, batches) in data {
        for (i, (p, t)) in batches.iter().enumerate() {
            tensors.push((format!("{name}/{i}/p"), p.contiguous()));
            tensors.push((format!("{name}/{i}/t"), t.contiguous()));
        }
    }
    let inputs = dir.join("inputs.safetensors");
    Tensor::write_safetensors(&tensors, &inputs).unwrap();
    let list: Vec<_> = cases
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "data": c.data, "ctor": c.ctor, "call": c.call, "forward": c.forward}))
        .collect();
    let cases_path = dir.join("cases.json");
    std::fs::write(&cases_path, serde_json::to_string(&list).unwrap()).unwrap();
    let script = r#"
import json, math, sys, warnings
import torch, torchmetrics
from safetensors.torch import load_file
from torchmetrics.classification import *
from torchmetrics.regression import *
from torchmetrics.aggregation import *
warnings.filterwarnings("ignore")
data = load_file(sys.argv[1])
out = {}
for c in json.load(open(sys.argv[2])):
    m = eval(c["ctor"])
    values = []
    i = 0
    while f'{c["data"]}/{i}/p' in data:
        p, t = data[f'{c["data"]}/{i}/p'], data[f'{c["data"]}/{i}/t']
        args = {"pt": (p, t), "p": (p,), "pw": (p, t), "pc": (p,)}[c["call"]]
        if c["forward"] and c["call"] in ("pw", "pc"):
            m.update(*args)
            values.append(m.compute())
        elif c["forward"]:
            values.append(m(*args))
        else:
            m.update(*args)
        i += 1
    if c["call"] == "pt":
        values.append(m.compute())
    out[c["name"]] = [None if math.isnan(x) else x for v in values for x in torch.as_tensor(v).double().flatten().tolist()]
print(json.dumps(out))
"#;
    let python = std::env::var("LIT_TORCH_PYTHON").expect("run the tests through scripts/with-torch");
    let out = Command::new(python).arg("-c").arg(script).arg(&inputs).arg(&cases_path).output().expect("run python");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * b.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

#[test]
fn values_match_torchmetrics_on_random_inputs() {
    let dir = temp_dir("metrics-torchmetrics");
    let mut data = BTreeMap::new();
    for seed in 0..3 {
        data.extend(datasets(seed));
    }
    let mut cases = Cases { data: &data, list: Vec::new() };
    for seed in 0..3 {
        classification_cases(&mut cases, seed);
        regression_cases(&mut cases, seed);
        aggregation_cases(&mut cases, seed);
    }
    let theirs = torchmetrics(&data, &cases.list, &dir);
    let (mut wrong, mut largest) = (Vec::new(), 0f64);
    for case in &cases.list {
        let expected = &theirs[&case.name];
        for (a, b) in case.ours.iter().zip(expected) {
            if let (Some(a), Some(b)) = (a, b) {
                largest = largest.max((a - b).abs());
            }
        }
        if expected.len() != case.ours.len() || !case.ours.iter().zip(expected).all(|(a, b)| close(*a, *b)) {
            wrong.push(format!("{}: ours {:?}, torchmetrics {:?}", case.name, case.ours, expected));
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases differ:\n{}", wrong.len(), cases.list.len(), wrong.join("\n"));
    assert!(cases.list.len() > 600, "{} cases", cases.list.len());
    eprintln!("{} cases agree with torchmetrics; the largest difference is {largest:e}", cases.list.len());
}

// ---------------------------------------------------------------------------------------------
// State, merging, collections, errors.

fn logits_and_labels(seed: u64) -> Data {
    batches(seed, |r, n| (r.randn(&[n, 5]), r.randint(0, 5, &[n])))
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[])
}

#[test]
fn state_round_trips_through_a_safetensors_file() -> lit::Result<()> {
    let dir = temp_dir("metrics-state");
    let data = logits_and_labels(1);
    for metric in [
        Box::new(Accuracy::multiclass(5).average(Average::Macro).top_k(2)) as Box<dyn Update>,
        Box::new(Auroc::multiclass(5)),
        Box::new(R2Score::new()),
    ] {
        let data: Data = if metric.name() == "R2Score" {
            data.iter().map(|(p, t)| (p.select(1, 0), t.to_kind(Kind::Float))).collect()
        } else {
            data.iter().map(|(p, t)| (p.shallow_clone(), t.shallow_clone())).collect()
        };
        metric.update(&data[0].0, &data[0].1)?;
        metric.update(&data[1].0, &data[1].1)?;
        let path = dir.join(format!("{}.safetensors", metric.name()));
        Tensor::write_safetensors(&metric.state(), &path)?;
        let restored = metric.boxed_fresh();
        restored.load_state(&Tensor::read_safetensors(&path)?)?;
        assert_eq!(value(&restored.compute()?), value(&metric.compute()?), "{}", metric.name());
        // Both go on alike from there.
        metric.update(&data[2].0, &data[2].1)?;
        restored.update(&data[2].0, &data[2].1)?;
        assert_eq!(value(&restored.compute()?), value(&metric.compute()?), "{}", metric.name());
    }
    let names: Vec<String> = Accuracy::binary().state().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["tp", "fp", "tn", "fn"], "torchmetrics' state names");
    let names: Vec<String> = Auroc::binary().state().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["preds", "target"]);
    // A state that does not fit is refused, naming the metric.
    let e = Accuracy::multiclass(3).load_state(&Accuracy::multiclass(5).state()).unwrap_err();
    assert!(e.to_string().contains("`MulticlassAccuracy`: state `tp` has shape [5]"), "{e}");
    Ok(())
}

#[test]
fn merged_states_equal_one_metric_over_all_batches() -> lit::Result<()> {
    let data = logits_and_labels(2);
    let f1 = || F1Score::multiclass(5).average(Average::Weighted);
    let (whole, a, b) = (f1(), f1(), f1());
    let (auroc, x, y) = (Auroc::multiclass(5), Auroc::multiclass(5), Auroc::multiclass(5));
    for (i, (p, t)) in data.iter().enumerate() {
        whole.update(p, t)?;
        auroc.update(p, t)?;
        let (f, r) = if i == 0 { (&a, &x) } else { (&b, &y) };
        f.update(p, t)?;
        r.update(p, t)?;
    }
    a.merge(&b)?;
    x.merge(&y)?;
    assert_eq!(value(&a.compute()?), value(&whole.compute()?));
    assert_eq!(value(&x.compute()?), value(&auroc.compute()?));
    assert!(a.merge(&Accuracy::multiclass(5)).is_err(), "states of another metric do not merge");
    Ok(())
}

#[test]
fn clones_share_state_and_reset_clears_it() -> lit::Result<()> {
    let data = logits_and_labels(3);
    let acc = Accuracy::multiclass(5);
    let handle = acc.clone();
    for (p, t) in &data {
        handle.update(p, t)?;
    }
    assert_eq!(acc.update_count(), 3);
    let all_p = Tensor::cat(&data.iter().map(|(p, _)| p.shallow_clone()).collect::<Vec<_>>(), 0);
    let all_t = Tensor::cat(&data.iter().map(|(_, t)| t.shallow_clone()).collect::<Vec<_>>(), 0);
    let expected = all_p.argmax(1, false).eq_tensor(&all_t).to_kind(Kind::Double).mean(Kind::Double);
    assert!((value(&acc.compute()?) - value(&expected)).abs() < 1e-6);
    // forward: the batch's value, and the batch joins the state.
    let batch = acc.forward(&data[0].0, &data[0].1)?;
    let alone = Accuracy::multiclass(5);
    alone.update(&data[0].0, &data[0].1)?;
    assert_eq!(value(&batch), value(&alone.compute()?));
    assert_eq!(acc.forward_value().map(|t| value(&t)), Some(value(&batch)));
    assert_eq!(acc.update_count(), 4);
    handle.reset();
    assert_eq!((acc.update_count(), acc.forward_value().is_none()), (0, true));
    assert_eq!(value(&acc.state()[0].1.sum(Kind::Int64)), 0.0);
    // Builders give new metrics: the one built from is untouched.
    acc.update(&data[0].0, &data[0].1)?;
    let top2 = acc.clone().top_k(2);
    assert_eq!((acc.update_count(), top2.update_count()), (1, 0));
    Ok(())
}

#[test]
fn a_collection_updates_computes_and_resets_its_members() -> lit::Result<()> {
    let data = logits_and_labels(4);
    let collection = MetricCollection::new()
        .with("acc", Accuracy::multiclass(5))
        .with("f1", F1Score::multiclass(5).average(Average::Macro))
        .with("auroc", Auroc::multiclass(5))
        .prefix("val_");
    let (acc, f1, auroc) =
        (Accuracy::multiclass(5), F1Score::multiclass(5).average(Average::Macro), Auroc::multiclass(5));
    for (p, t) in &data {
        collection.update(p, t)?;
        acc.update(p, t)?;
        f1.update(p, t)?;
        auroc.update(p, t)?;
    }
    let values = collection.compute()?;
    assert_eq!(values.keys().collect::<Vec<_>>(), ["val_acc", "val_auroc", "val_f1"]);
    assert_eq!(value(&values["val_acc"]), value(&acc.compute()?));
    assert_eq!(value(&values["val_f1"]), value(&f1.compute()?));
    assert_eq!(value(&values["val_auroc"]), value(&auroc.compute()?));
    let fresh = collection.fresh().prefix("test_");
    assert_eq!(fresh.get("acc").map(|m| m.update_count()), Some(0));
    assert_eq!(fresh.key("acc"), "test_acc");
    let saved = collection.state();
    assert!(saved.iter().any(|(n, _)| n == "auroc.preds"), "{:?}", saved.iter().map(|(n, _)| n).collect::<Vec<_>>());
    fresh.load_state(&saved)?;
    assert_eq!(value(&fresh.compute()?["test_f1"]), value(&f1.compute()?));
    collection.reset();
    assert!(collection.iter().all(|(_, m)| m.update_count() == 0));
    Ok(())
}

#[test]
fn bad_inputs_are_errors_naming_the_metric_and_the_shapes() {
    let acc = Accuracy::multiclass(5);
    let e =
        acc.update(&Tensor::zeros([8, 4], (Kind::Float, Device::Cpu)), &Tensor::zeros([8], (Kind::Int64, Device::Cpu)));
    let e = e.unwrap_err();
    assert!(e.to_string().contains("`MulticlassAccuracy`: `preds` of shape [8, 4] and `target` of shape [8]"), "{e}");
    assert!(e.downcast_ref::<MetricError>().is_some_and(|m| m.metric == "MulticlassAccuracy"));
    assert_eq!(acc.update_count(), 0, "a failed update changes nothing");
    let e =
        acc.update(&Tensor::zeros([3, 5], (Kind::Float, Device::Cpu)), &Tensor::from_slice(&[0i64, 5, 1])).unwrap_err();
    assert!(e.to_string().contains("class indices in 0..5, found [5.0]"), "{e}");
    let e =
        Accuracy::binary().update(&Tensor::zeros([3], (Kind::Float, Device::Cpu)), &Tensor::from_slice(&[0i64, 2, 1]));
    assert!(e.unwrap_err().to_string().contains("`BinaryAccuracy`: `target` must hold only 0 or 1, found [2.0]"));
    let e = MeanSquaredError::new()
        .update(&Tensor::zeros([3], (Kind::Float, Device::Cpu)), &Tensor::zeros([4], (Kind::Float, Device::Cpu)));
    assert!(e.unwrap_err().to_string().contains("`MeanSquaredError`: `preds` of shape [3] and `target` of shape [4]"));
    let e = Accuracy::multiclass(3)
        .top_k(4)
        .update(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)), &Tensor::zeros([2], (Kind::Int64, Device::Cpu)));
    assert!(e.unwrap_err().to_string().contains("`top_k` must lie in 1..=3"));
    let e = R2Score::new().compute().unwrap_err();
    assert!(e.to_string().contains("`R2Score`: needs at least two samples, got 0"), "{e}");
    let e = MeanMetric::new().nan_strategy(NanStrategy::Error).update(&Tensor::from_slice(&[1.0f32, f32::NAN]));
    assert!(e.unwrap_err().to_string().contains("NaN"));
}

// ---------------------------------------------------------------------------------------------
// Logging metric objects in the Trainer.

type B = (Tensor, Tensor);

#[lightning_module]
struct Classifier {
    vs: nn::VarStore,
    layer: nn::Linear,
    val_acc: Accuracy,
    train_acc: Accuracy,
    matrix: ConfusionMatrix,
    log_matrix: bool,
}

#[lightning_module]
impl Classifier {
    fn training_step(&mut self, (x, y): B, cx: &mut Ctx) -> lit::Result<Tensor> {
        let logits = self.layer.forward(&x);
        let _batch_value = self.train_acc.forward(&logits, &y)?;
        cx.log("train_acc", &self.train_acc).on_epoch(true);
        Ok(logits.cross_entropy_for_logits(&y))
    }

    fn validation_step(&mut self, (x, y): B, cx: &mut Ctx) -> lit::Result<()> {
        let logits = self.layer.forward(&x);
        self.val_acc.update(&logits, &y)?;
        cx.log("val_acc", &mut self.val_acc);
        if self.log_matrix {
            self.matrix.update(&logits, &y)?;
            cx.log("matrix", &self.matrix);
        }
        Ok(())
    }

    fn configure_optimizers(&self) -> Optimizers {
        Sgd::new(0.0).into()
    }
}

fn classifier() -> Classifier {
    let vs = nn::VarStore::new(Device::Cpu);
    let layer = nn::linear(vs.root() / "layer", 3, 4, Default::default());
    Classifier {
        vs,
        layer,
        val_acc: Accuracy::multiclass(4),
        train_acc: Accuracy::multiclass(4),
        matrix: ConfusionMatrix::multiclass(4),
        log_matrix: false,
    }
}

fn classification_batches(seed: u64) -> Vec<B> {
    let mut rng = Rng(seed);
    [8, 8, 8, 8, 5].into_iter().map(|n| (rng.randn(&[n, 3]), rng.randint(0, 4, &[n]))).collect()
}

/// The accuracy of `model` over `batches`, by hand.
fn accuracy(model: &Classifier, batches: &[B]) -> f64 {
    let (mut right, mut total) = (0.0, 0.0);
    for (x, y) in batches {
        let pred = lit::tch::no_grad(|| model.layer.forward(x)).argmax(1, false);
        right += pred.eq_tensor(y).sum(Kind::Double).double_value(&[]);
        total += y.size()[0] as f64;
    }
    right / total
}

#[test]
fn a_logged_metric_is_computed_at_the_epoch_end_and_reset() -> lit::Result<()> {
    let data = classification_batches(11);
    let mut model = classifier();
    let mut trainer = quiet().enable_checkpointing(false).build()?;
    let first = trainer.validate(
        &mut model,
        Batches::new(data.iter().map(|(x, y)| (x.shallow_clone(), y.shallow_clone())).collect()),
    )?;
    let expected = accuracy(&model, &data);
    assert!((first[0]["val_acc"] - expected).abs() < 1e-6, "{} vs {expected}", first[0]["val_acc"]);
    assert_eq!(model.val_acc.update_count(), 0, "reset after the epoch");
    // A second validation gives the same value, not one accumulated over both.
    let second = trainer.validate(
        &mut model,
        Batches::new(data.iter().map(|(x, y)| (x.shallow_clone(), y.shallow_clone())).collect()),
    )?;
    assert_eq!(second[0]["val_acc"], first[0]["val_acc"]);
    Ok(())
}

#[test]
fn in_training_the_step_value_is_the_batch_value_and_the_epoch_value_the_whole_epoch() -> lit::Result<()> {
    let (train, val) = (classification_batches(12), classification_batches(13));
    let mut model = classifier(); // its learning rate is 0: the weights stay put
    let mut trainer = quiet().enable_checkpointing(false).max_epochs(1).num_sanity_val_steps(2).build()?;
    let loader = |data: &[B]| Batches::new(data.iter().map(|(x, y)| (x.shallow_clone(), y.shallow_clone())).collect());
    trainer.fit(&mut model, loader(&train), loader(&val))?;
    let m = trainer.callback_metrics();
    let close = |key: &str, expected: f64| assert!((m[key] - expected).abs() < 1e-6, "{key}: {} vs {expected}", m[key]);
    // `forward` in each step: the step value is the last batch's, the epoch value all batches'.
    close("train_acc_step", accuracy(&model, &train[4..]));
    close("train_acc_epoch", accuracy(&model, &train));
    // The sanity check's two batches were computed and reset, not carried into the epoch.
    close("val_acc", accuracy(&model, &val));
    assert_eq!((model.train_acc.update_count(), model.val_acc.update_count()), (0, 0));
    Ok(())
}

#[test]
fn a_metric_whose_value_is_not_a_scalar_cannot_be_logged() {
    let mut model = classifier();
    model.log_matrix = true;
    let mut trainer = quiet().enable_checkpointing(false).build().unwrap();
    let e = trainer.validate(&mut model, Batches::new(classification_batches(14))).unwrap_err().to_string();
    assert!(e.contains("`matrix` logs a `MulticlassConfusionMatrix`, whose value has shape [4, 4]"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Two processes.

fn metrics_ddp(mode: &str, dir: &Path) -> serde_json::Value {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metrics_ddp"));
    c.args([mode, dir.to_str().unwrap()]);
    for var in ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"] {
        c.env_remove(var);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::json!({
        "rank0": serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(dir.join("metrics-0.json")).unwrap()).unwrap(),
        "rank1": std::fs::read_to_string(dir.join("metrics-1.json")).ok().map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap()),
    })
}

#[test]
fn two_processes_log_the_value_of_the_whole_data() {
    if !lit::dist::ProcessGroup::available() {
        eprintln!("skipped: lit was built without torch.distributed");
        return;
    }
    let (single, ddp) = (temp_dir("metrics-single"), temp_dir("metrics-ddp"));
    let one = metrics_ddp("single", &single)["rank0"].clone();
    let two = metrics_ddp("ddp", &ddp);
    // Each process validated half the samples; the metric objects were synced over both.
    assert_eq!((one["first"]["local_samples"].as_f64(), one["first"]["samples"].as_f64()), (Some(36.0), Some(36.0)));
    for rank in ["rank0", "rank1"] {
        assert_eq!(two[rank]["first"]["local_samples"].as_f64(), Some(18.0), "{two}");
    }
    let keys = ["samples", "val_acc", "val_auroc", "val_mean", "val_f1", "val_recall", "uneven_auroc"];
    for run in ["first", "second"] {
        for key in keys {
            let expected = one[run][key].as_f64().unwrap_or_else(|| panic!("{run} {key}: {one}"));
            for rank in ["rank0", "rank1"] {
                let got = two[rank][run][key].as_f64().unwrap_or_else(|| panic!("{rank} {run} {key}: {two}"));
                assert!((got - expected).abs() <= 1e-6, "{rank} {run} {key}: {got}, one process {expected}");
            }
        }
    }
}
