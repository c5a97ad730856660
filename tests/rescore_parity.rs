//! The Rust rescorer against the Python training side (`models/parity.json`, written by
//! `training/train.py`): for every fixture query the Rust features equal the Python featurizer's
//! (same nonzero indices, values within 1e-6) and tract's p_complex equals onnxruntime's within
//! 1e-5. Needs no services.

use std::path::PathBuf;

use serde::Deserialize;
use tierwatch::rescore::{FeatureBuf, Rescorer};

#[derive(Deserialize)]
struct Parity {
    model_version: String,
    fixtures: Vec<Fixture>,
}

#[derive(Deserialize)]
struct Fixture {
    text: String,
    p_complex: f32,
    ood_score: f64,
    indices: Vec<u32>,
    values: Vec<f32>,
}

const FEATURE_TOL: f32 = 1e-6;
const SCORE_TOL: f32 = 1e-5;
/// The OOD rank is computed densely in numpy and sparsely here: only summation order differs.
const OOD_TOL: f64 = 1e-9;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

#[test]
fn rust_matches_python_featurizer_and_onnxruntime() {
    let raw = std::fs::read(models().join("parity.json")).expect("models/parity.json");
    let parity: Parity = serde_json::from_slice(&raw).expect("parity.json parses");
    let model = Rescorer::load(models().join("rescorer.onnx")).expect("committed model loads");
    assert_eq!(&**model.version(), parity.model_version, "parity.json was written for another model");
    assert!(parity.fixtures.len() >= 50, "only {} fixtures", parity.fixtures.len());

    let mut buf = FeatureBuf::new();
    let (mut max_feat, mut max_score, mut max_ood) = (0f32, 0f32, 0f64);
    for f in &parity.fixtures {
        let short: String = f.text.chars().take(40).collect();
        model.featurizer().featurize(&f.text, &mut buf);
        assert_eq!(buf.indices(), &f.indices[..], "feature indices differ for {short:?}");
        for (a, b) in buf.values().iter().zip(&f.values) {
            max_feat = max_feat.max((a - b).abs());
        }
        assert!(max_feat <= FEATURE_TOL, "feature values differ by {max_feat} for {short:?}");
        let ood = model.ood_score(&f.text);
        max_ood = max_ood.max((ood - f.ood_score).abs());
        assert!(max_ood <= OOD_TOL, "ood_score {ood} vs {} for {short:?}", f.ood_score);
    }
    // All fixtures in one batch, and each alone: the batch must not change a row's score.
    let texts: Vec<&str> = parity.fixtures.iter().map(|f| f.text.as_str()).collect();
    let batched = model.score_batch(&texts).expect("inference");
    for (i, f) in parity.fixtures.iter().enumerate() {
        let single = model.score_batch(&[f.text.as_str()]).expect("inference")[0];
        for p in [batched[i], single] {
            max_score = max_score.max((p - f.p_complex).abs());
        }
        assert!(max_score <= SCORE_TOL, "p_complex {} vs onnxruntime {} for fixture {i}", batched[i], f.p_complex);
    }
    println!(
        "{} fixtures: max |feature diff| {max_feat:e}, max |p_complex diff| {max_score:e}, max |ood diff| {max_ood:e}",
        parity.fixtures.len()
    );
}
