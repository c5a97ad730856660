"""Train the tierwatch rescorer (p_complex from query text) on simulator output.

    python train.py --train DIR --calib-share 0.2 --test DIR --out ../models

DIR is the output of `tierwatch simulate --format jsonl`: routing_decisions.jsonl (query_text) and
ground_truth.jsonl (true_complexity, hidden_complexity per event_id). Writes rescorer.onnx (standard
MatMul/Add/Sigmoid, input "features" float[batch, dim], output "p_complex" float[batch, 1]),
rescorer.json (the sidecar: featurizer spec, threshold, OOD centroid and distance quantiles),
parity.json (fixture queries with onnxruntime scores and the exact sparse features) and
metrics.json (the held-out figures quoted in README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import featurize as fz

MODEL_VERSION = "rescorer-2026-11-lr2"
OOD_QUANTILES = 101


def load(dirname):
    truth = {}
    with open(os.path.join(dirname, "ground_truth.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            truth[r["event_id"]] = r
    rows = []
    with open(os.path.join(dirname, "routing_decisions.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            t = r.get("query_text")
            if t is None:
                continue  # redacted: nothing to learn from or to rescore
            g = truth[r["event_id"]]
            rows.append(
                {
                    "event_id": r["event_id"],
                    "conversation_id": r["conversation_id"],
                    "text": t,
                    "y": 1 if g["true_complexity"] == "complex" else 0,
                    "hidden": bool(g["hidden_complexity"]),
                    "cohort": bool(g["new_cohort"]),
                    "tier": r["tier"],
                }
            )
    return rows


def features(rows, spec):
    # The simulator repeats templates a lot: featurize each distinct text once.
    cache = {}
    for r in rows:
        if r["text"] not in cache:
            cache[r["text"]] = None
    uniq = list(cache)
    mat = fz.featurize_many(uniq, spec)
    pos = {t: i for i, t in enumerate(uniq)}
    return mat[[pos[r["text"]] for r in rows]]


def conv_bucket(cid: str) -> float:
    # Split by conversation (turns of one conversation share intent and wording), stable across runs.
    return int.from_bytes(hashlib.sha256(cid.encode()).digest()[:8], "big") / 2.0**64


def youden_threshold(y, p):
    order = np.argsort(-p)
    ys = y[order]
    ps = p[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    tpr = tp / max(1, ys.sum())
    fpr = fp / max(1, (1 - ys).sum())
    j = tpr - fpr
    # Only cut between distinct scores.
    last = np.r_[ps[1:] != ps[:-1], True]
    k = int(np.argmax(np.where(last, j, -np.inf)))
    return float(ps[k])


def export_onnx(coef, intercept, dim, path):
    # Logistic regression as Mul + ReduceSum rather than MatMul: tract's MatMul packs the dense
    # [batch, D] input into kernel panels on every run, which cost more than the arithmetic here
    # (measured 2-6x slower; BENCHMARKS.md). Standard ops either way.
    w = numpy_helper.from_array(coef.astype(np.float32).reshape(1, dim), "W")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    b = numpy_helper.from_array(np.array([intercept], dtype=np.float32), "B")
    nodes = [
        helper.make_node("Mul", ["features", "W"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axes"], ["logit_w"], keepdims=1),
        helper.make_node("Add", ["logit_w", "B"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p_complex"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rescorer",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("p_complex", TensorProto.FLOAT, ["batch", 1])],
        initializer=[w, axes, b],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tierwatch-train"
    )
    model.ir_version = 8  # broadly readable (onnxruntime, tract)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def ort_scores(sess, mat):
    out = []
    for s in range(0, mat.shape[0], 4096):
        dense = mat[s : s + 4096].toarray().astype(np.float32)
        out.append(sess.run(["p_complex"], {"features": dense})[0][:, 0])
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def quality(y, p, theta):
    pred = p >= theta
    res = {"n": int(len(y)), "positives": int(y.sum())}
    res["auc"] = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None
    res["accuracy"] = float(np.mean(pred == (y == 1)))
    res["recall_complex"] = float(pred[y == 1].mean()) if y.sum() else None
    res["specificity_simple"] = float((~pred[y == 0]).mean()) if (y == 0).any() else None
    return res


def ood_rank(d, q):
    """Quantile rank of distance d in the training quantiles q (piecewise linear, clamped)."""
    if d <= q[0]:
        return 0.0
    if d >= q[-1]:
        return 1.0
    k = int(np.searchsorted(q, d, side="right"))  # q[k-1] <= d < q[k]
    lo, hi = q[k - 1], q[k]
    frac = 0.0 if hi <= lo else (d - lo) / (hi - lo)
    return ((k - 1) + frac) / (len(q) - 1)


FIXTURES = [
    "",
    "   ",
    "\t\n\r ",
    "Where is my order?",
    "WHERE IS MY ORDER?",
    "where   is\tmy\norder",
    "wehre is my ordr??",
    "I need a refund for the duplicate charge on my invoice INV-2291!!!",
    "Why was I charged twice... again?!",
    "Can you explain the GDPR data export & deletion process (art. 17)?",
    "Où est ma commande ? Je l'attends depuis 5 jours.",
    "¿Dónde está mi pedido?",
    "Straße ÄÖÜ ß İstanbul ǅ ﬁ",
    "注文はどこですか？",
    "我的订单在哪里",
    "Заказ не пришёл, верните деньги",
    "مرحبا، أين طلبي؟",
    "emoji 🚀🔥 refund please 💸",
    "family 👨‍👩‍👧 zwj sequence",
    "combining e\u0301 vs é",
    "nbsp\u00a0between\u00a0words",
    "em\u2003space and ideographic\u3000space",
    "zero\u200bwidth",
    "tab\tand\u000bvertical\u000cfeed",
    "CRLF line\r\nbreaks\r\n",
    "a",
    "ab",
    "abc",
    "  leading and trailing  ",
    "don't can't won't it's",
    "price: $1,299.99 (USD) — 15% off?",
    "email me at jane.doe+billing@example.com",
    "https://example.com/account/settings?tab=billing#plan",
    "order #A-12345 / ref: 98765",
    "ALL CAPS PLAN DOWNGRADE TRADE-OFFS FOR ENTERPRISE TIER",
    "pasword reset not wrking",
    "hi! how do I reset my password? thanks",
    "my flexpay installment was taken twice this month",
    "FlexPay cycle moved without notice, why?",
    "where is my charge from?",
    "x" * 5000,
    ("refund dispute chargeback " * 400).strip(),
    "é" * 3000,
    "ab" * 1023 + "é🚀x",  # the max_chars cut lands on a multi-byte boundary
    "\u0000null\u0001control\u007fdel",
    "mixed ÉCOLE école",
    "1234567890",
    "?!.,;:",
]


def dump_sidecar(obj, f):
    """One line per key (the long OOD arrays compact), so the sidecar diffs and reads well."""
    lines = []
    for key, val in obj.items():
        if isinstance(val, dict):
            inner = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in val.items())
            lines.append(f" {json.dumps(key)}: {{\n{inner}\n }}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(val)}")
    f.write("{\n" + ",\n".join(lines) + "\n}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--calib-share", type=float, default=0.2)
    ap.add_argument("--C", type=float, default=4.0)
    ap.add_argument("--train-seed-label", default="")
    ap.add_argument("--test-seed-label", default="")
    args = ap.parse_args()
    spec = dict(fz.DEFAULT_SPEC)
    dim = spec["dim"]

    rows = load(args.train)
    fit_rows = [r for r in rows if conv_bucket(r["conversation_id"]) >= args.calib_share]
    cal_rows = [r for r in rows if conv_bucket(r["conversation_id"]) < args.calib_share]
    print(f"train: {len(fit_rows)} fit, {len(cal_rows)} calibration rows", file=sys.stderr)
    x_fit = features(fit_rows, spec)
    y_fit = np.array([r["y"] for r in fit_rows])
    clf = LogisticRegression(C=args.C, max_iter=2000, solver="lbfgs")
    clf.fit(x_fit, y_fit)

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "rescorer.onnx")
    export_onnx(clf.coef_[0], float(clf.intercept_[0]), dim, onnx_path)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])

    x_cal = features(cal_rows, spec)
    y_cal = np.array([r["y"] for r in cal_rows])
    p_cal = ort_scores(sess, x_cal)
    theta = youden_threshold(y_cal, p_cal)

    # Out-of-distribution reference: the centroid of the fit rows and the distribution of their
    # distances to it (the daemon reports the quantile rank of a query's distance).
    centroid = np.asarray(x_fit.astype(np.float64).mean(axis=0)).ravel()
    c2 = float(centroid @ centroid)
    x64 = x_fit.astype(np.float64)
    sq = np.asarray(x64.multiply(x64).sum(axis=1)).ravel()
    dots = x64 @ centroid
    dist = np.sqrt(np.maximum(0.0, sq - 2 * dots + c2))
    qs = np.quantile(dist, np.linspace(0, 1, OOD_QUANTILES))
    nz = np.nonzero(centroid)[0]

    sidecar = {
        "format": "tierwatch-rescorer/1",
        "model_version": MODEL_VERSION,
        "input_name": "features",
        "output_name": "p_complex",
        "featurizer": spec,
        "threshold": theta,
        "ood": {
            "centroid_indices": [int(i) for i in nz],
            "centroid_values": [float(centroid[i]) for i in nz],
            "distance_quantiles": [float(q) for q in qs],
        },
        "training": {
            "label": "true_complexity == complex",
            "corpus": f"tierwatch simulate --scenario postmortem {args.train_seed_label}".strip(),
            "rows_fit": len(fit_rows),
            "rows_calibration": len(cal_rows),
            "C": args.C,
            "threshold_rule": "max Youden J (TPR - FPR) on the calibration conversations",
        },
    }
    with open(os.path.join(args.out, "rescorer.json"), "w") as f:
        dump_sidecar(sidecar, f)

    # Held-out evaluation on another seed.
    test = load(args.test)
    x_te = features(test, spec)
    y_te = np.array([r["y"] for r in test])
    p_te = ort_scores(sess, x_te)
    p_skl = clf.predict_proba(x_te)[:, 1]
    hidden = np.array([r["hidden"] for r in test])
    cohort = np.array([r["cohort"] for r in test])
    cheap = np.array([r["tier"] == "cheap" for r in test])
    surface_simple = (y_te == 0) | hidden
    metrics = {
        "model_version": MODEL_VERSION,
        "threshold": theta,
        "train": args.train_seed_label,
        "test": args.test_seed_label,
        "max_abs_ort_vs_sklearn": float(np.max(np.abs(p_te - p_skl))),
        "heldout_all": quality(y_te, p_te, theta),
        "heldout_surface_simple (true simple + hidden complex)": quality(
            y_te[surface_simple], p_te[surface_simple], theta
        ),
        "heldout_hidden_complex_recall": float((p_te[hidden] >= theta).mean()) if hidden.any() else None,
        "heldout_hidden_complex_n": int(hidden.sum()),
        "heldout_new_cohort": quality(y_te[cohort], p_te[cohort], theta),
        "heldout_cheap_tier": quality(y_te[cheap], p_te[cheap], theta),
        "calibration": quality(y_cal, p_cal, theta),
    }
    with open(os.path.join(args.out, "..", "training", "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
        f.write("\n")
    print(json.dumps(metrics, indent=1))

    # Parity fixtures: hand-written edge cases plus held-out queries (distinct texts).
    texts = list(FIXTURES)
    seen = set(texts)
    rng = np.random.default_rng(7)
    for i in rng.permutation(len(test)):
        t = test[i]["text"]
        if t not in seen:
            seen.add(t)
            texts.append(t)
        if len(texts) >= len(FIXTURES) + 40:
            break
    mat = fz.featurize_many(texts, spec)
    p_fx = ort_scores(sess, mat)
    qarr = np.array(qs)
    fixtures = []
    for k, t in enumerate(texts):
        idx, val = fz.featurize(t, spec)
        x = np.zeros(dim)
        x[idx] = val.astype(np.float64)
        d = math.sqrt(max(0.0, float(x @ x) - 2 * float(x @ centroid) + c2))
        fixtures.append(
            {
                "text": t,
                "p_complex": float(p_fx[k]),
                "ood_score": ood_rank(d, qarr),
                "indices": [int(i) for i in idx],
                "values": [float(v) for v in val],
            }
        )
    parity = {
        "model_version": MODEL_VERSION,
        "note": "p_complex from onnxruntime " + ort.__version__ + "; indices/values from training/featurize.py",
        "fixtures": fixtures,
    }
    with open(os.path.join(args.out, "parity.json"), "w") as f:
        json.dump(parity, f, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
