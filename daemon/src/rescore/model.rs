//! [`Rescorer`]: the ONNX classifier (run by tract) with its sidecar.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::features::{FeatureBuf, Featurizer, FeaturizerSpec};
use super::RescoreError;

/// `format` of the sidecars this build reads.
pub const SIDECAR_FORMAT: &str = "tierwatch-rescorer/1";

/// Batch sizes the model is compiled for, largest first; a chunk of r rows runs on the smallest
/// plan with B >= r, zero-padded. Concrete shapes let tract pick kernels and skip symbolic shape
/// evaluation per run. Runs of 8 rows measured faster than runs of 64 (~145k against ~120k
/// queries/s, BENCHMARKS.md): the dense input and tract's intermediate of the same size (8 × D ×
/// 4 bytes = 128 KiB each at D = 2^12) stay in L2.
const PLAN_ROWS: [usize; 2] = [8, 1];

/// The JSON sidecar next to the ONNX file (`models/rescorer.json` for `models/rescorer.onnx`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// [`SIDECAR_FORMAT`].
    pub format: String,
    /// Reported with every score (`Scored::model_version`), so estimates can be split by model.
    pub model_version: String,
    /// Name of the ONNX graph input, float `[batch, D]`.
    pub input_name: String,
    /// Name of the ONNX graph output, float `[batch, 1]` or `[batch]`.
    pub output_name: String,
    /// How text becomes the input row.
    pub featurizer: FeaturizerSpec,
    /// Decision threshold θ: a query is suspected complex when p_complex ≥ θ.
    pub threshold: f64,
    /// Out-of-distribution reference.
    pub ood: OodSpec,
    /// Free-form provenance (corpus, sizes, hyper-parameters); not interpreted.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// Training centroid (sparse) and the quantiles of the training rows' distances to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodSpec {
    pub centroid_indices: Vec<u32>,
    pub centroid_values: Vec<f64>,
    /// Evenly spaced quantiles (q_0 = min … q_last = max) of ‖x − c‖ over the training rows.
    pub distance_quantiles: Vec<f64>,
}

#[derive(Debug)]
struct Ood {
    /// Dense centroid (D × 8 bytes): a query's dot product with it is one lookup per nonzero.
    centroid: Vec<f64>,
    norm2: f64,
    quantiles: Vec<f64>,
}

impl Ood {
    fn new(spec: &OodSpec, dim: usize) -> Result<Self, String> {
        if spec.centroid_indices.len() != spec.centroid_values.len() {
            return Err("ood.centroid_indices and ood.centroid_values differ in length".into());
        }
        let mut centroid = vec![0.0f64; dim];
        for (&i, &v) in spec.centroid_indices.iter().zip(&spec.centroid_values) {
            if i as usize >= dim || !v.is_finite() {
                return Err(format!("ood centroid entry ({i}, {v}) outside dim {dim} or not finite"));
            }
            centroid[i as usize] = v;
        }
        let q = &spec.distance_quantiles;
        if q.len() < 2 || q.iter().any(|x| !x.is_finite() || *x < 0.0) || q.windows(2).any(|w| w[0] > w[1]) {
            return Err("ood.distance_quantiles must be >= 2 finite, non-negative, non-decreasing values".into());
        }
        let norm2 = centroid.iter().map(|c| c * c).sum();
        Ok(Ood { centroid, norm2, quantiles: q.clone() })
    }

    /// Quantile rank in [0, 1] of ‖x − c‖, piecewise linear between the stored quantiles.
    /// ‖x − c‖² = ‖x‖² − 2x·c + ‖c‖² touches only x's nonzeros.
    fn score(&self, indices: &[u32], values: &[f32]) -> f64 {
        let (mut x2, mut dot) = (0.0f64, 0.0f64);
        for (&i, &v) in indices.iter().zip(values) {
            let v = f64::from(v);
            x2 += v * v;
            dot += v * self.centroid[i as usize];
        }
        let d = (x2 - 2.0 * dot + self.norm2).max(0.0).sqrt();
        let q = &self.quantiles;
        let last = q.len() - 1;
        if d <= q[0] {
            return 0.0;
        }
        if d >= q[last] {
            return 1.0;
        }
        // q[k-1] <= d < q[k], 1 <= k <= last (same as numpy searchsorted side="right").
        let k = q.partition_point(|&x| x <= d);
        let (lo, hi) = (q[k - 1], q[k]);
        let frac = if hi > lo { (d - lo) / (hi - lo) } else { 0.0 };
        ((k - 1) as f64 + frac) / last as f64
    }
}

/// Queries every loaded model is tried on before it serves (see [`Rescorer::probe`]): empty, short,
/// long, non-ASCII and repetitive text.
const PROBE_TEXTS: [&str; 6] = [
    "",
    "where is my order?",
    "I want to dispute a chargeback on my enterprise contract and need the invoice history for the last two years",
    "Квантовая хромодинамика и 量子色力学 ∮∯∰",
    "refund refund refund refund refund refund refund refund refund refund refund refund",
    "a",
];

/// Whether a model output is a probability: finite and in [0, 1] (NaN is not).
pub fn valid_score(p: f32) -> bool {
    (0.0..=1.0).contains(&p)
}

type Plan = SimplePlan<TypedFact, Box<dyn TypedOp>, TypedModel>;

/// One optimised plan per entry of [`PLAN_ROWS`], same order.
struct Plans(Vec<(usize, Plan)>);

impl std::fmt::Debug for Plans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(b, _)| b)).finish()
    }
}

impl Plans {
    /// The smallest plan that fits `rows` (≤ the largest batch size).
    fn for_rows(&self, rows: usize) -> Option<&(usize, Plan)> {
        self.0.iter().rev().find(|(b, _)| *b >= rows)
    }
}

/// A loaded rescorer: featurizer, optimised tract plan, threshold and OOD reference. Immutable,
/// `Send + Sync`; share it as `Arc<Rescorer>` (see [`super::ModelHandle`] for hot reload).
#[derive(Debug)]
pub struct Rescorer {
    path: PathBuf,
    version: Arc<str>,
    threshold: f32,
    featurizer: Featurizer,
    plans: Plans,
    ood: Ood,
}

thread_local! {
    /// Per-thread featurizer scratch: `ood_score` runs on ingest threads and must not allocate.
    static BUF: RefCell<FeatureBuf> = RefCell::new(FeatureBuf::new());
}

fn with_buf<R>(mut f: impl FnMut(&mut FeatureBuf) -> R) -> R {
    let done = BUF.try_with(|b| b.try_borrow_mut().ok().map(|mut b| f(&mut b)));
    match done {
        Ok(Some(r)) => r,
        // Thread-local being destroyed, or already borrowed: a fresh buffer is correct, just slower.
        _ => f(&mut FeatureBuf::new()),
    }
}

impl Rescorer {
    /// Loads `onnx_path` and its sidecar (same stem, `.json`), checks that they agree (input
    /// width = featurizer D, one output of width 1) and optimises the model once for a symbolic
    /// batch size.
    pub fn load(onnx_path: impl AsRef<Path>) -> Result<Rescorer, RescoreError> {
        let rescorer = Self::load_unprobed(onnx_path)?;
        rescorer.probe()?;
        Ok(rescorer)
    }

    /// [`Rescorer::load`] without the output probe (tests use it for a model that misbehaves only on
    /// inputs the probe does not try).
    pub(crate) fn load_unprobed(onnx_path: impl AsRef<Path>) -> Result<Rescorer, RescoreError> {
        let path = onnx_path.as_ref().to_path_buf();
        let sidecar_path = path.with_extension("json");
        let raw =
            std::fs::read(&sidecar_path).map_err(|source| RescoreError::Io { path: sidecar_path.clone(), source })?;
        let sidecar: Sidecar = serde_json::from_slice(&raw)
            .map_err(|source| RescoreError::SidecarJson { path: sidecar_path.clone(), source })?;
        let sidecar_err = |reason: String| RescoreError::Sidecar { path: sidecar_path.clone(), reason };
        if sidecar.format != SIDECAR_FORMAT {
            return Err(sidecar_err(format!("format {:?}, expected {SIDECAR_FORMAT:?}", sidecar.format)));
        }
        if !(sidecar.threshold.is_finite() && (0.0..=1.0).contains(&sidecar.threshold)) {
            return Err(sidecar_err(format!("threshold {} outside [0, 1]", sidecar.threshold)));
        }
        if sidecar.model_version.is_empty() {
            return Err(sidecar_err("empty model_version".into()));
        }
        let featurizer = Featurizer::new(sidecar.featurizer.clone())?;
        let dim = featurizer.dim();
        let plans = build_plans(&path, &sidecar, dim)?;
        let ood = Ood::new(&sidecar.ood, dim).map_err(sidecar_err)?;
        Ok(Rescorer {
            path,
            version: Arc::from(sidecar.model_version.as_str()),
            threshold: sidecar.threshold as f32,
            featurizer,
            plans,
            ood,
        })
    }

    /// Runs the freshly loaded model on [`PROBE_TEXTS`] (through both plans: one full chunk of 8
    /// and one single row) and refuses it when any output is not a probability, so a reload of
    /// such a model keeps the previous one serving instead of poisoning the results.
    fn probe(&self) -> Result<(), RescoreError> {
        let texts: Vec<&str> = PROBE_TEXTS.iter().cycle().take(PLAN_ROWS[0] + 1).copied().collect();
        let scores = self.score_batch(&texts)?;
        match texts.iter().zip(&scores).find(|(_, p)| !valid_score(**p)) {
            None => Ok(()),
            Some((text, p)) => Err(RescoreError::OutOfRange(format!(
                "model {} gives p_complex {p} for the probe text {text:?}; it must be a number in [0, 1]",
                self.path.display()
            ))),
        }
    }

    /// `model_version` from the sidecar.
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// Decision threshold θ (suspected complex when p_complex ≥ θ).
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The ONNX file this model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The featurizer (e.g. for callers that keep their own [`FeatureBuf`]).
    pub fn featurizer(&self) -> &Featurizer {
        &self.featurizer
    }

    /// Out-of-distribution score in [0, 1]: the quantile rank of the query's distance to the
    /// training centroid among the training rows' distances (0.99 = farther than 99% of training
    /// queries). Sparse, no tract, no allocation after the thread's first call.
    pub fn ood_score(&self, text: &str) -> f64 {
        with_buf(|buf| {
            self.featurizer.featurize(text, buf);
            self.ood.score(buf.indices(), buf.values())
        })
    }

    /// p_complex for each text, in order. Featurizes into dense rows and runs the model in chunks
    /// of at most 8 rows (a row's score does not depend on the chunk it is in).
    pub fn score_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<f32>, RescoreError> {
        let mut out = Vec::with_capacity(texts.len());
        let dim = self.featurizer.dim();
        with_buf(|buf| {
            for chunk in texts.chunks(PLAN_ROWS[0]) {
                let (rows, plan) = self
                    .plans
                    .for_rows(chunk.len())
                    .ok_or_else(|| RescoreError::Inference(format!("no plan for {} rows", chunk.len())))?;
                let mut input = Tensor::zero::<f32>(&[*rows, dim]).map_err(inference)?;
                let data = input.as_slice_mut::<f32>().map_err(inference)?;
                for (row, text) in data.chunks_exact_mut(dim).zip(chunk) {
                    self.featurizer.featurize(text.as_ref(), buf);
                    buf.scatter(row);
                }
                let result = plan.run(tvec!(input.into())).map_err(inference)?;
                let scores = result
                    .first()
                    .ok_or_else(|| RescoreError::Inference("model returned no output".into()))?
                    .as_slice::<f32>()
                    .map_err(inference)?;
                if scores.len() != *rows {
                    return Err(RescoreError::Inference(format!(
                        "model returned {} scores for {rows} rows",
                        scores.len()
                    )));
                }
                // Padding rows (zero features) are dropped.
                out.extend_from_slice(&scores[..chunk.len()]);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

fn inference(e: impl std::fmt::Display) -> RescoreError {
    RescoreError::Inference(format!("{e:#}"))
}

/// Parses, checks against the sidecar (with a symbolic batch), then optimises one runnable plan
/// per batch size of [`PLAN_ROWS`].
fn build_plans(path: &Path, sidecar: &Sidecar, dim: usize) -> Result<Plans, RescoreError> {
    let bytes = std::fs::read(path).map_err(|source| RescoreError::Io { path: path.to_path_buf(), source })?;
    let model_err = |e: TractError| RescoreError::Model { path: path.to_path_buf(), reason: format!("{e:#}") };
    let shape_err = |reason: String| RescoreError::Shape { path: path.to_path_buf(), reason };
    let model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(model_err)?;

    let (inputs, outputs) = (model.input_outlets().map_err(model_err)?, model.output_outlets().map_err(model_err)?);
    if inputs.len() != 1 || outputs.len() != 1 {
        return Err(shape_err(format!("{} inputs and {} outputs, expected 1 and 1", inputs.len(), outputs.len())));
    }
    let (in_name, out_name) = (&model.node(inputs[0].node).name, &model.node(outputs[0].node).name);
    if *in_name != sidecar.input_name || *out_name != sidecar.output_name {
        return Err(shape_err(format!(
            "graph input/output are {in_name:?}/{out_name:?}, sidecar says {:?}/{:?}",
            sidecar.input_name, sidecar.output_name
        )));
    }
    // Catch the declared width early for a readable message; an undeclared width is still
    // checked below when tract types the graph with [batch, D].
    let fact = model.input_fact(0).map_err(model_err)?;
    let declared: Vec<Option<i64>> = fact.shape.dims().map(|d| d.concretize().and_then(|d| d.to_i64().ok())).collect();
    if let Some(Some(width)) = declared.get(1) {
        if *width != dim as i64 {
            return Err(shape_err(format!("model input width is {width}, sidecar featurizer dim is {dim}")));
        }
    }
    if fact.shape.rank().concretize().is_some_and(|r| r != 2) {
        return Err(shape_err(format!("model input rank is not 2 (declared {declared:?})")));
    }

    let batch = model.symbols.sym("batch");
    let input_fact = f32::fact(&[batch.to_dim(), dim.to_dim()]);
    let typed = model
        .with_input_fact(0, input_fact.into())
        .and_then(|m| m.with_output_fact(0, InferenceFact::default()))
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .map_err(|e| shape_err(format!("does not run on input [batch, {dim}]: {e:#}")))?;
    let out = typed.output_fact(0).map_err(model_err)?;
    let ok_shape = match out.shape.dims() {
        [b] => *b == batch.to_dim(),
        [b, one] => *b == batch.to_dim() && *one == 1.to_dim(),
        _ => false,
    };
    if out.datum_type != f32::datum_type() || !ok_shape {
        return Err(shape_err(format!("output is {out:?}, expected f32 [batch, 1] or [batch]")));
    }
    let mut plans = Vec::with_capacity(PLAN_ROWS.len());
    for rows in PLAN_ROWS {
        let plan = typed
            .concretize_dims(&SymbolValues::default().with(&batch, rows as i64))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(model_err)?;
        plans.push((rows, plan));
    }
    Ok(Plans(plans))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The committed model (trained by `training/train.py`).
    pub(crate) fn committed_model() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/rescorer.onnx")
    }

    /// Writes `bytes` to `path` by rename, as a deployment should, so a watcher never sees a
    /// half-written file.
    pub(crate) fn replace_file(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Copies the committed model and sidecar into `dir` as `NAME.onnx`/`NAME.json` (each
    /// replaced by rename), letting `edit` change the sidecar.
    pub(crate) fn copy_model(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
        let src = committed_model();
        let dst = dir.join(format!("{name}.onnx"));
        replace_file(&dst, &std::fs::read(&src).unwrap());
        let mut side: serde_json::Value =
            serde_json::from_slice(&std::fs::read(src.with_extension("json")).unwrap()).unwrap();
        edit(&mut side);
        replace_file(&dst.with_extension("json"), &serde_json::to_vec(&side).unwrap());
        dst
    }

    /// Writes `NAME.onnx` (a tiny graph built here: `features [batch, D]` → `p_complex [batch, 1]`
    /// = `scale · Σ features² + offset`, then `Sqrt` when `sqrt`) with the committed sidecar
    /// (version `NAME`). Rows are L2-normalised, so Σ features² is 1 for a text with features and
    /// 0 for the empty text: `scale` and `offset` choose the output of each.
    pub(crate) fn write_affine_model(dir: &Path, name: &str, scale: f32, offset: f32, sqrt: bool) -> PathBuf {
        use prost::Message;
        use tract_onnx::pb;
        let dst = copy_model(dir, name, |s| s["model_version"] = name.into());
        let side: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dst.with_extension("json")).unwrap()).unwrap();
        let (input, output) = (side["input_name"].as_str().unwrap(), side["output_name"].as_str().unwrap());
        let dim = side["featurizer"]["dim"].as_i64().unwrap();
        let float = pb::tensor_proto::DataType::Float as i32;
        let value = |name: &str, dims: Vec<pb::tensor_shape_proto::dimension::Value>| pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: float,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .into_iter()
                            .map(|v| pb::tensor_shape_proto::Dimension { value: Some(v), ..Default::default() })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        use pb::tensor_shape_proto::dimension::Value::{DimParam, DimValue};
        let scalar = |name: &str, v: f32| pb::TensorProto {
            name: name.into(),
            data_type: float,
            float_data: vec![v],
            ..Default::default()
        };
        let node = |op: &str, inputs: &[&str], out: &str| pb::NodeProto {
            op_type: op.into(),
            name: out.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.into()],
            ..Default::default()
        };
        let mut sum = node("ReduceSumSquare", &[input], "sum");
        sum.attribute.push(pb::AttributeProto {
            name: "axes".into(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: vec![1],
            ..Default::default()
        });
        let last = if sqrt { "affine" } else { output };
        let mut nodes = vec![sum, node("Mul", &["sum", "scale"], "scaled"), node("Add", &["scaled", "offset"], last)];
        if sqrt {
            nodes.push(node("Sqrt", &["affine"], output));
        }
        let model = pb::ModelProto {
            ir_version: 7,
            opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: 11 }],
            graph: Some(pb::GraphProto {
                name: "affine".into(),
                node: nodes,
                initializer: vec![scalar("scale", scale), scalar("offset", offset)],
                input: vec![value(input, vec![DimParam("batch".into()), DimValue(dim)])],
                output: vec![value(output, vec![DimParam("batch".into()), DimValue(1)])],
                ..Default::default()
            }),
            ..Default::default()
        };
        replace_file(&dst, &model.encode_to_vec());
        dst
    }

    #[test]
    fn models_with_outputs_outside_0_1_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        // The builder makes loadable models: 0.25 everywhere.
        let ok = Rescorer::load(write_affine_model(dir.path(), "quarter", 0.0, 0.25, false)).unwrap();
        assert_eq!(ok.score_batch(&["where is my order", ""]).unwrap(), [0.25, 0.25]);
        for (name, scale, offset, sqrt, shows) in [
            ("above_one", 0.0, 2.0, false, "p_complex 2"),
            ("negative", 0.0, -0.5, false, "p_complex -0.5"),
            ("nan", 0.0, -1.0, true, "p_complex NaN"),
            // Fine on the empty text (√0), NaN on any text with features: the probe texts catch it.
            ("nan_on_text", -1.0, 0.0, true, "p_complex NaN"),
        ] {
            let err = Rescorer::load(write_affine_model(dir.path(), name, scale, offset, sqrt)).unwrap_err();
            assert!(matches!(err, RescoreError::OutOfRange(_)), "{name}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(shows) && msg.contains("must be a number in [0, 1]"), "{name}: {msg}");
            assert!(msg.contains(&format!("{name}.onnx")), "{name}: the error names the file: {msg}");
        }
    }

    #[test]
    fn rescorer_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Rescorer>();
    }

    #[test]
    fn loads_and_scores_committed_model() {
        let r = Rescorer::load(committed_model()).unwrap();
        assert!(r.version().starts_with("rescorer-"));
        assert!(r.threshold() > 0.0 && r.threshold() < 1.0);
        let texts = ["where is my order?", "I want to dispute a chargeback on my enterprise contract", ""];
        let p = r.score_batch(&texts).unwrap();
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|p| (0.0..=1.0).contains(p)));
        assert!(p[1] > p[0], "{p:?}");
        assert!(r.score_batch::<&str>(&[]).unwrap().is_empty());
        // Chunking and padding give the same scores as one row at a time.
        let many: Vec<String> = (0..300).map(|i| format!("order {i} refund dispute")).collect();
        let all = r.score_batch(&many).unwrap();
        for i in [0, 7, 8, 63, 64, 299] {
            assert_eq!(all[i], r.score_batch(&[&many[i]]).unwrap()[0]);
        }
    }

    #[test]
    fn ood_score_is_a_rank() {
        let r = Rescorer::load(committed_model()).unwrap();
        let usual = r.ood_score("Where is my order?");
        let odd = r.ood_score("Квантовая хромодинамика и 量子色力学 ∮∯∰ zzzzqqqq");
        assert!((0.0..=1.0).contains(&usual) && (0.0..=1.0).contains(&odd));
        assert!(odd > usual, "usual {usual}, odd {odd}");
        assert_eq!(odd, 1.0);
    }

    #[test]
    fn truncated_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = copy_model(dir.path(), "m", |_| {});
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = Rescorer::load(&p).unwrap_err();
        assert!(matches!(err, RescoreError::Model { .. }), "{err}");
        assert!(err.to_string().contains("cannot load ONNX model"), "{err}");
        std::fs::write(&p, b"not a model at all").unwrap();
        assert!(matches!(Rescorer::load(&p).unwrap_err(), RescoreError::Model { .. }));
    }

    #[test]
    fn sidecar_with_wrong_dim_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = copy_model(dir.path(), "m", |s| s["featurizer"]["dim"] = 16384.into());
        let err = Rescorer::load(&p).unwrap_err();
        assert!(matches!(err, RescoreError::Shape { .. }), "{err}");
        assert!(err.to_string().contains("input width is 4096, sidecar featurizer dim is 16384"), "{err}");
    }

    #[test]
    fn bad_sidecars_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("threshold", Box::new(|s| s["threshold"] = 1.5.into())),
            ("format", Box::new(|s| s["format"] = "other/9".into())),
            ("hash", Box::new(|s| s["featurizer"]["hash"] = "md5".into())),
            ("quantiles", Box::new(|s| s["ood"]["distance_quantiles"] = serde_json::json!([2.0, 1.0]))),
            ("input", Box::new(|s| s["input_name"] = "x".into())),
            ("unknown field", Box::new(|s| s["surprise"] = 1.into())),
        ];
        for (what, edit) in cases {
            let p = copy_model(dir.path(), what.replace(' ', "_").as_str(), edit);
            assert!(Rescorer::load(&p).is_err(), "{what} accepted");
        }
        let p = copy_model(dir.path(), "nosidecar", |_| {});
        std::fs::remove_file(p.with_extension("json")).unwrap();
        assert!(matches!(Rescorer::load(&p).unwrap_err(), RescoreError::Io { .. }));
    }
}
