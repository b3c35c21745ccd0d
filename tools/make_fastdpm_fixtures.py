"""Reference values of FastDPM's STEP and VAR schedules, for tests/core/fastdpm_schedules.rs.

Dev tooling only (the library never runs Python). Computes, from the formulas of FastDPM's
generate.py (Kong & Ping 2021), written out here with numpy in float64:
- STEP tau for S in {10, 20, 50, 100}, linear and quadratic;
- VAR eta (bisection on the product of 1 - eta) and the continuous steps where the network
  is called (bisection on the Stirling approximation of log alpha_bar(t)).

Run: .venv/bin/python tools/make_fastdpm_fixtures.py  (needs numpy)
Writes: tests/fixtures/fastdpm_schedules.json
"""
import json
import os

import numpy as np

T, BETA_0, BETA_T = 1000, 1e-4, 0.02


def bisearch(f, domain, target, eps=1e-8):
    sign = -1 if target < 0 else 1
    left, right = domain
    x = (left + right) / 2
    for _ in range(1000):
        x = (left + right) / 2
        if f(x) < target:
            right = x
        elif f(x) > (1 + sign * eps) * target:
            left = x
        else:
            break
    return x


def step_taus(S, kind):
    if kind == "linear":
        c = (T - 1.0) / (S - 1.0)
        return [int(np.floor(i * c)) for i in range(S)]
    return [int(s) for s in np.linspace(0, np.sqrt(T * 0.8), S) ** 2]


def var_etas(S, kind):
    target = np.prod(1 - np.linspace(BETA_0, BETA_T, T))
    if kind == "linear":
        g = lambda x: np.linspace(BETA_0, x, S)
        domain = (BETA_0, 0.99)
    else:
        g = lambda x: np.array([BETA_0 * (1 + i * x) ** 2 for i in range(S)])
        domain = (0.0, 0.95 / np.sqrt(BETA_0) / S)
    f = lambda x: np.prod(1 - g(x))
    return g(bisearch(f, domain, target, eps=1e-4))


def log_gamma(x):
    y = x - 1
    return np.log(2 * np.pi * y) / 2 + y * (np.log(y) - 1) + np.log(1 + 1 / (12 * y))


def log_cont_noise(t):
    delta = (BETA_T - BETA_0) / (T - 1)
    c = (1.0 - BETA_0) / delta
    t1 = t + 1
    return t1 * np.log(delta) + log_gamma(c + 1) - log_gamma(c - t1 + 1)


def var_times(etas):
    alpha_bar = np.cumprod(1 - np.linspace(BETA_0, BETA_T, T))
    gamma_bar = np.cumprod(1 - etas)
    times = []
    for s in range(len(etas) - 1, -1, -1):
        t_adapted = None
        for i in range(T - 1):
            if alpha_bar[i] >= gamma_bar[s] > alpha_bar[i + 1]:
                t_adapted = bisearch(log_cont_noise, (i - 0.01, i + 1.01), np.log(gamma_bar[s]))
                break
        times.append(float(T - 1 if t_adapted is None else t_adapted))
    return times


def main():
    out = {"T": T, "beta_0": BETA_0, "beta_T": BETA_T, "cases": []}
    for S in (10, 20, 50, 100):
        for kind in ("linear", "quadratic"):
            etas = var_etas(S, kind)
            out["cases"].append({
                "S": S,
                "kind": kind,
                "step_taus": step_taus(S, kind),
                "var_etas": [float(e) for e in etas],
                "var_times": var_times(etas),
            })
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "fastdpm_schedules.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
