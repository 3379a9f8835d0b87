#!/usr/bin/env python3
"""Independent reference numbers for `clip eval` (numpy + scikit-learn).

Run with Debian's interpreter (/usr/bin/python3). Every mode writes float32 .npy inputs and an
`expected.json` into --out; the C++ tests read both.

  metrics   random class scores and labels -> top-1/top-5 (numpy argsort), mean per-class
            recall (sklearn.metrics.balanced_accuracy_score), confusion matrix (sklearn); random
            image/caption embeddings with 5 captions per image -> recall@1/5/10 both ways and
            mean/median rank (numpy).
  logreg    a Gaussian-mixture train/test set -> sklearn LogisticRegression(solver="lbfgs") at
            a given C: test accuracy, the penalised objective at its solution.
  bench     the 50,000 x 512 benchmark set (10 classes); times sklearn's fit at C and reports
            its test accuracy and seconds (tools/bench_linear_probe.sh runs ours beside it).
  zeroshot  random template embeddings -> class embeddings (mean of normalized, renormalized)
            and 100 * image @ classes^T logits.
  model     a tiny seeded CLIP (tools/reference_model.py's architecture) with the full 49,408
            token vocabulary and context 77, so the real tokenizer drives it: OUT/model.safetensors
            (f16, OpenAI names), for end-to-end runs of the `clip eval` commands.
"""
import argparse
import json
import os
import time

import numpy as np


def save(out, name, arr):
    np.save(os.path.join(out, name), np.ascontiguousarray(arr, dtype=np.float32))


def stable_rank(row, target):
    order = np.argsort(-row, kind="stable")
    return int(np.nonzero(order == target)[0][0]) + 1


def mode_metrics(args):
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix
    rng = np.random.default_rng(args.seed)
    n, k = 500, 10
    labels = rng.integers(0, k, size=n)
    labels[labels == 7] = 3  # class 7 has no samples: excluded from mean per-class recall
    scores = rng.normal(size=(n, k)).astype(np.float32)
    scores[np.arange(n), labels] += 1.0  # better than chance
    save(args.out, "scores.npy", scores)
    save(args.out, "labels.npy", labels)
    order = np.argsort(-scores, axis=1, kind="stable")
    pos = np.array([np.nonzero(order[i] == labels[i])[0][0] for i in range(n)])
    pred = scores.argmax(1)
    exp = {
        "top1": float(np.mean(pos < 1)),
        "top5": float(np.mean(pos < 5)),
        "mean_per_class_recall": float(balanced_accuracy_score(labels, pred)),
        "confusion": confusion_matrix(labels, pred, labels=list(range(k))).tolist(),
    }
    # Retrieval: 60 images, 5 captions each, captions shuffled.
    ni, per, d = 60, 5, 16
    img = rng.normal(size=(ni, d)).astype(np.float32)
    text_image = np.repeat(np.arange(ni), per)
    rng.shuffle(text_image)
    txt = (img[text_image] + 1.6 * rng.normal(size=(ni * per, d))).astype(np.float32)
    save(args.out, "images.npy", img)
    save(args.out, "texts.npy", txt)
    save(args.out, "text_image.npy", text_image)
    a = img / np.linalg.norm(img, axis=1, keepdims=True)
    b = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sims = (a.astype(np.float64) @ b.astype(np.float64).T)
    i2t = np.array([min(stable_rank(sims[i], t) for t in np.nonzero(text_image == i)[0]) for i in range(ni)])
    t2i = np.array([stable_rank(sims[:, t], text_image[t]) for t in range(ni * per)])
    for name, r in (("image_to_text", i2t), ("text_to_image", t2i)):
        exp[name] = {f"recall@{kk}": float(np.mean(r <= kk)) for kk in (1, 5, 10)}
        exp[name]["mean_rank"] = float(np.mean(r))
        exp[name]["median_rank"] = float(np.median(r))
    json.dump(exp, open(os.path.join(args.out, "expected.json"), "w"), indent=1)


def mixture(rng, n, dim, classes, spread):
    means = rng.normal(size=(classes, dim)) * spread / np.sqrt(dim)
    def draw(m):
        y = rng.integers(0, classes, size=m)
        x = means[y] + rng.normal(size=(m, dim))
        return x.astype(np.float32), y
    return draw


def objective(clf, X, y, C):
    """sum of log-losses + 1/(2C)||W||^2 (bias unpenalized) at sklearn's solution, in float64."""
    X = X.astype(np.float64)
    z = X @ clf.coef_.T + clf.intercept_
    if z.shape[1] == 1:  # binomial
        z = z[:, 0]
        s = np.where(y == 1, -z, z)
        return float(np.sum(np.logaddexp(0, s)) + 0.5 / C * np.sum(clf.coef_ ** 2))
    zmax = z.max(1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(1)) + zmax[:, 0]
    return float(np.sum(lse - z[np.arange(len(y)), y]) + 0.5 / C * np.sum(clf.coef_ ** 2))


def fit_sklearn(X, y, C, max_iter):
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(solver="lbfgs", C=C, max_iter=max_iter, random_state=0)
    t0 = time.perf_counter()
    clf.fit(X, y)
    return clf, time.perf_counter() - t0


def mode_logreg(args):
    rng = np.random.default_rng(args.seed)
    draw = mixture(rng, args.n, args.dim, args.classes, args.spread)
    Xtr, ytr = draw(args.n)
    Xte, yte = draw(args.n_test)
    save(args.out, "train_x.npy", Xtr)
    save(args.out, "train_y.npy", ytr)
    save(args.out, "test_x.npy", Xte)
    save(args.out, "test_y.npy", yte)
    clf, secs = fit_sklearn(Xtr, ytr, args.C, args.max_iter)
    exp = {"C": args.C, "test_accuracy": float(clf.score(Xte, yte)),
           "train_objective": objective(clf, Xtr, ytr, args.C), "sklearn_seconds": secs,
           "sklearn_iterations": int(np.max(clf.n_iter_))}
    json.dump(exp, open(os.path.join(args.out, "expected.json"), "w"), indent=1)
    print(json.dumps(exp))


def mode_bench(args):
    rng = np.random.default_rng(args.seed)
    draw = mixture(rng, args.n, args.dim, args.classes, args.spread)
    Xtr, ytr = draw(args.n)
    Xte, yte = draw(args.n_test)
    save(args.out, "train_x.npy", Xtr)
    save(args.out, "train_y.npy", ytr)
    save(args.out, "test_x.npy", Xte)
    save(args.out, "test_y.npy", yte)
    if args.skip_fit:
        return
    clf, secs = fit_sklearn(Xtr, ytr, args.C, args.max_iter)
    exp = {"C": args.C, "n": args.n, "dim": args.dim, "classes": args.classes,
           "test_accuracy": float(clf.score(Xte, yte)), "seconds": secs,
           "iterations": int(np.max(clf.n_iter_)), "train_objective": objective(clf, Xtr, ytr, args.C)}
    json.dump(exp, open(os.path.join(args.out, "sklearn.json"), "w"), indent=1)
    print(json.dumps(exp))


def mode_zeroshot(args):
    rng = np.random.default_rng(args.seed)
    classes, templates, d, n = 7, 5, 12, 40
    text = rng.normal(size=(classes * templates, d)).astype(np.float32)  # class-major
    images = rng.normal(size=(n, d)).astype(np.float32)
    save(args.out, "template_embeddings.npy", text)
    save(args.out, "images.npy", images)
    t = text.astype(np.float64).reshape(classes, templates, d)
    t /= np.linalg.norm(t, axis=2, keepdims=True)
    c = t.mean(1)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    im = images / np.linalg.norm(images, axis=1, keepdims=True)
    save(args.out, "class_embeddings.npy", c)
    save(args.out, "logits.npy", 100.0 * im @ c.T)


def mode_model(args):
    import sys
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference_model as rm
    rm.CONFIGS["evaltiny"] = dict(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1,
                                  vision_heads=1, context_length=77, vocab_size=49408, text_width=64,
                                  text_heads=1, text_layers=1)
    model = rm.build_model("evaltiny", args.seed)
    rm.write_safetensors(os.path.join(args.out, "model.safetensors"), rm.openai_state_dict(model, torch.float16))
    json.dump({"config": rm.CONFIGS["evaltiny"]}, open(os.path.join(args.out, "expected.json"), "w"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["metrics", "logreg", "bench", "zeroshot", "model"])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--spread", type=float, default=2.5, help="class-mean scale (separation)")
    p.add_argument("--C", type=float, default=0.316)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--skip-fit", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    {"metrics": mode_metrics, "logreg": mode_logreg, "bench": mode_bench, "zeroshot": mode_zeroshot, "model": mode_model}[args.mode](args)


if __name__ == "__main__":
    main()
