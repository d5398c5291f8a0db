"""Does sampling 20,000 rows for LightGBM's bin edges (its default: 200,000) change accuracy? A synthetic regression
with backbone-like features (120,000 train rows x 2,048 non-negative features, 32 bins, colsample 0.05, l1):

    .venv/bin/python benchmarks/bench_lgbm_bin_sample.py
"""
import time

import lightgbm as lgb
import numpy as np

rng = np.random.default_rng(0)
n, nv, d, k = 120_000, 20_000, 2048, 32
z = rng.standard_normal((n + nv, k)).astype(np.float32)
w = rng.standard_normal((k, d)).astype(np.float32) / np.sqrt(k)
x = np.maximum(z @ w + 0.3 * rng.standard_normal((n + nv, d)).astype(np.float32), 0)  # ReLU-like features
y = 1 / (1 + np.exp(-(z[:, 0] * z[:, 1] + np.sin(2 * z[:, 2]) + 0.5 * z[:, 3] ** 2 - 0.5)))
y = np.clip(y + 0.05 * rng.standard_normal(n + nv), 0, 1)
for cnt in (200_000, 20_000):
    ds = {"max_bin": 32, "min_data_in_leaf": 5, "feature_pre_filter": False, "verbose": -1, "force_col_wise": True,
          "bin_construct_sample_cnt": cnt}
    t = time.time()
    dtr = lgb.Dataset(x[:n], y[:n], params=ds).construct()
    dva = lgb.Dataset(x[n:], y[n:], reference=dtr, params=ds).construct()
    tc = time.time() - t
    p = {**ds, "objective": "regression_l1", "learning_rate": 0.1, "num_leaves": 31, "feature_fraction": 0.05,
         "seed": 42, "deterministic": True, "num_threads": 2}
    b = lgb.train(p, dtr, 300, valid_sets=[dva], callbacks=[lgb.early_stopping(20, verbose=False)])
    mae = np.abs(b.predict(x[n:], num_iteration=b.best_iteration) - y[n:]).mean()
    print({"bin_construct_sample_cnt": cnt, "construct_s": round(tc, 1), "best_iteration": b.best_iteration,
           "val_mae": round(float(mae), 5), "train_s": round(time.time() - t - tc, 1)}, flush=True)
