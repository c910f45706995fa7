//! Tests of `stats` against scipy 1.17.1 and hand computations.
//!
//! The scipy values below were printed by this script, run with /tmp/torchref/bin/python
//! (numpy, scipy 1.17.1); its sample names (A_X, S1_Y, BX, …) are the constants' names here.
//!
// # Reference values for crates/core/src/stats/tests.rs (scipy 1.17.1, numpy; /tmp/torchref/bin/python).
// import numpy as np
// from scipy import stats, special
//
// A_X = [1.83, 0.57, 2.94, 1.12, 3.61]                      # 5 vs 7, no ties: auto -> exact
// A_Y = [2.05, 4.18, 3.77, 2.66, 5.02, 4.49, 3.30]
// B_X = [9.1, 8.7, 9.6]                                      # 3 vs 12, no ties: auto -> exact
// B_Y = [7.2, 8.9, 6.5, 7.9, 8.1, 5.4, 6.8, 7.5, 8.4, 6.1, 7.0, 5.9]
// C_X = [0.12, 1.45, 0.88, 2.31, 1.07, 0.64, 1.92, 0.35, 1.58, 0.97]   # 10 vs 12, no ties: auto -> asymptotic
// C_Y = [1.21, 2.04, 1.76, 2.89, 0.71, 2.47, 1.33, 3.05, 1.99, 2.62, 1.50, 2.20]
// D_X = [1.0, 2.0, 2.0, 3.0]                                 # 4 vs 5, ties: auto -> asymptotic
// D_Y = [2.0, 3.0, 3.0, 4.0, 5.0]
// E_X = [41.5, 38.0, 44.5, 38.0, 47.0, 41.5, 39.5, 44.5, 50.0, 38.0, 42.5, 45.0]  # 12 vs 15, ties
// E_Y = [36.5, 38.0, 33.0, 41.5, 35.0, 36.5, 39.5, 31.5, 38.0, 34.0, 36.5, 40.0, 33.0, 37.5, 42.5]
// G_X = [2.7, 3.9, 1.4, 4.6, 3.2, 5.3, 2.1, 4.1]               # 8 vs 10, no ties: auto -> exact (the edge)
// G_Y = [3.6, 5.8, 4.4, 6.2, 2.9, 5.1, 6.9, 4.8, 5.5, 3.4]
// H_X = [2.7, 3.9, 1.4, 4.6, 3.2, 5.3, 2.1, 4.1, 3.7]          # 9 vs 10, no ties: auto -> asymptotic
// H_Y = G_Y
//
// def rb(x, y):  # rank-biserial from its definition, P(X > Y) - P(X < Y), not from U
//     return float(np.mean(np.sign(np.subtract.outer(x, y))))
//
// for name, x, y in [("A", A_X, A_Y), ("B", B_X, B_Y), ("C", C_X, C_Y), ("D", D_X, D_Y), ("E", E_X, E_Y),
//                      ("G", G_X, G_Y), ("H", H_X, H_Y)]:
//     r = stats.mannwhitneyu(x, y, alternative="two-sided")
//     print(f"{name} auto: U1={float(r.statistic)!r} p={float(r.pvalue)!r} r={rb(x, y)!r}")
// F_X = [float(i) for i in range(60)]                        # 60 vs 60, no ties: exact forced (counts > 2^64)
// F_Y = [j + 7.5 for j in range(60)]
// for name, x, y, m in [("A", A_X, A_Y, "asymptotic"), ("C", C_X, C_Y, "exact"), ("D", D_X, D_Y, "exact"),
//                       ("F", F_X, F_Y, "exact"), ("F", F_X, F_Y, "asymptotic")]:
//     r = stats.mannwhitneyu(x, y, alternative="two-sided", method=m)
//     print(f"{name} {m}: U1={float(r.statistic)!r} p={float(r.pvalue)!r}")
//
// S1_X = [1, 2, 2, 3, 4, 4, 4, 5, 6, 7]
// S1_Y = [2, 1, 3, 3, 5, 4, 6, 6, 8, 7]
// S2_X = [0.3, 0.9, 0.9, 1.4, 2.2, 2.2, 3.1, 3.1, 3.1, 4.0, 4.6, 5.2, 5.2, 6.0, 6.8]
// S2_Y = [9.1, 8.0, 8.4, 8.4, 7.7, 6.9, 7.2, 6.9, 5.5, 6.1, 4.8, 4.8, 5.0, 3.9, 4.2]
// for name, x, y in [("S1", S1_X, S1_Y), ("S2", S2_X, S2_Y)]:
//     print(f"{name} spearman={float(stats.spearmanr(x, y).statistic)!r}")
//
// R = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
// print("ranks", stats.rankdata(R).tolist())
// for name, x in [("A_X", A_X), ("E_Y", E_Y)]:
//     x = np.array(x)
//     print(f"summary {name}: mean={x.mean()!r} sd={x.std(ddof=1)!r} median={float(np.median(x))!r}")
// print("erfc", [(v, float(special.erfc(v))) for v in [0.0, 0.3, 0.99, 1.0, 1.7, 3.2, 5.5, 12.0, 26.5, -0.8, -2.5]])
//
// # Bootstrap of the Spearman correlation: 30 pairs with ties (values rounded to 0.5).
// g = np.random.default_rng(7)
// bx = np.round(g.normal(0, 2, 30) * 2) / 2
// by = np.round((0.6 * bx + g.normal(0, 2, 30)) * 2) / 2
// print("BX", bx.tolist()); print("BY", by.tolist())
// def rho(x, y, axis=-1):  # vectorised Spearman: Pearson of average ranks
//     rx, ry = stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis)
//     rx = rx - rx.mean(axis=axis, keepdims=True); ry = ry - ry.mean(axis=axis, keepdims=True)
//     return (rx * ry).sum(axis=axis) / np.sqrt((rx**2).sum(axis=axis) * (ry**2).sum(axis=axis))
// assert abs(rho(bx, by) - stats.spearmanr(bx, by).statistic) < 1e-14
// print("B spearman", float(stats.spearmanr(bx, by).statistic))
// ends = np.array([stats.bootstrap((bx, by), rho, paired=True, vectorized=True, n_resamples=10_000,
//                                  method="percentile", rng=seed).confidence_interval for seed in range(100)])
// print("B percentile CI over 100 scipy seeds: mean", ends.mean(axis=0).tolist(), "sd", ends.std(axis=0, ddof=1).tolist())
//
// # The exact F p-value in integers, by the recursion on the largest pooled value (an x beats all n
// # y's, or a y beats nothing): N(m, n, k) = N(m-1, n, k-n) + N(m, n-1, k), N(0, n, 0) = N(m, 0, 0) = 1.
// from fractions import Fraction
// from math import comb
// m = n = 60; K = m * n - 2222  # P(U >= 2222) = P(U <= 1378), U = max(U1, U2) = 2222
// N = [[[1] + [0] * K for _ in range(n + 1)] for _ in range(m + 1)]
// for i in range(1, m + 1):
//     for j in range(1, n + 1):
//         N[i][j] = [N[i][j - 1][k] + (N[i - 1][j][k - j] if k >= j else 0) for k in range(K + 1)]
// print("F exact in integers:", repr(float(Fraction(2 * sum(N[m][n]), comb(m + n, m)))))
// print("C(300008, 8) =", f"{comb(300008, 8):.3e}", "2^128 =", f"{2**128:.3e}")

use super::*;

const A_X: [f64; 5] = [1.83, 0.57, 2.94, 1.12, 3.61];
const A_Y: [f64; 7] = [2.05, 4.18, 3.77, 2.66, 5.02, 4.49, 3.30];
const B_X: [f64; 3] = [9.1, 8.7, 9.6];
const B_Y: [f64; 12] = [7.2, 8.9, 6.5, 7.9, 8.1, 5.4, 6.8, 7.5, 8.4, 6.1, 7.0, 5.9];
const C_X: [f64; 10] = [0.12, 1.45, 0.88, 2.31, 1.07, 0.64, 1.92, 0.35, 1.58, 0.97];
const C_Y: [f64; 12] = [1.21, 2.04, 1.76, 2.89, 0.71, 2.47, 1.33, 3.05, 1.99, 2.62, 1.50, 2.20];
const D_X: [f64; 4] = [1.0, 2.0, 2.0, 3.0];
const D_Y: [f64; 5] = [2.0, 3.0, 3.0, 4.0, 5.0];
const E_X: [f64; 12] = [41.5, 38.0, 44.5, 38.0, 47.0, 41.5, 39.5, 44.5, 50.0, 38.0, 42.5, 45.0];
const E_Y: [f64; 15] = [36.5, 38.0, 33.0, 41.5, 35.0, 36.5, 39.5, 31.5, 38.0, 34.0, 36.5, 40.0, 33.0, 37.5, 42.5];
const G_X: [f64; 8] = [2.7, 3.9, 1.4, 4.6, 3.2, 5.3, 2.1, 4.1];
const G_Y: [f64; 10] = [3.6, 5.8, 4.4, 6.2, 2.9, 5.1, 6.9, 4.8, 5.5, 3.4];
const H_X: [f64; 9] = [2.7, 3.9, 1.4, 4.6, 3.2, 5.3, 2.1, 4.1, 3.7];
const S1_X: [f64; 10] = [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 4.0, 5.0, 6.0, 7.0];
const S1_Y: [f64; 10] = [2.0, 1.0, 3.0, 3.0, 5.0, 4.0, 6.0, 6.0, 8.0, 7.0];
const S2_X: [f64; 15] = [0.3, 0.9, 0.9, 1.4, 2.2, 2.2, 3.1, 3.1, 3.1, 4.0, 4.6, 5.2, 5.2, 6.0, 6.8];
const S2_Y: [f64; 15] = [9.1, 8.0, 8.4, 8.4, 7.7, 6.9, 7.2, 6.9, 5.5, 6.1, 4.8, 4.8, 5.0, 3.9, 4.2];
#[rustfmt::skip]
const BX: [f64; 30] = [0.0, 0.5, -0.5, -2.0, -1.0, -2.0, 0.0, 2.5, -1.0, -1.0, 1.0, 0.5, 0.0, -2.0, -0.0,
    1.5, -2.5, -1.0, -4.0, -2.5, -3.5, -0.5, -2.5, 0.5, 0.5, -0.5, -5.0, -1.0, -0.0, 0.0];
#[rustfmt::skip]
const BY: [f64; 30] = [-3.0, -0.5, -2.5, -3.0, 1.5, -3.0, -0.0, 3.5, -2.0, -1.0, 1.0, 0.5, -2.5, -1.0, 2.5,
    -2.0, 0.0, -0.5, -3.5, 2.5, -0.5, -2.5, -1.5, 1.5, -0.0, 1.0, -3.0, 0.5, 3.0, -1.5];

fn f_x() -> Vec<f64> {
    (0..60).map(f64::from).collect()
}
fn f_y() -> Vec<f64> {
    (0..60).map(|j| f64::from(j) + 7.5).collect()
}

#[track_caller]
fn close(got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want.abs(), "got {got:e}, want {want:e} (relative {rel:e})");
}

#[test]
fn ranks_average_ties_like_scipy_rankdata() {
    let r = ranks(&[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0]);
    assert_eq!(r, [4.5, 1.5, 6.0, 1.5, 8.0, 11.0, 3.0, 10.0, 8.0, 4.5, 8.0]);
    assert_eq!(ranks(&[0.0, -0.0, 1.0]), [1.5, 1.5, 3.0], "-0.0 ties 0.0");
    assert!(ranks(&[1.0, f64::NAN]).iter().all(|r| r.is_nan()));
    assert!(ranks(&[]).is_empty());
}

#[test]
fn summary_matches_numpy_and_is_nan_where_undefined() {
    let a = summary(&A_X);
    assert_eq!(a.n, 5);
    close(a.mean, 2.0140000000000002, 1e-14);
    close(a.sd, 1.2572708538735795, 1e-14);
    assert_eq!(a.median, 1.83);
    let e = summary(&E_Y);
    close(e.mean, 36.86666666666667, 1e-14);
    close(e.sd, 3.2041639575194445, 1e-14);
    assert_eq!(e.median, 36.5);
    assert_eq!(summary(&[1.0, 4.0]).median, 2.5, "even n: the mean of the middle two");

    let empty = summary(&[]);
    assert!(empty.n == 0 && empty.mean.is_nan() && empty.sd.is_nan() && empty.median.is_nan());
    let one = summary(&[7.0]);
    assert!(one.mean == 7.0 && one.median == 7.0 && one.sd.is_nan(), "{one:?}");
    let nan = summary(&[1.0, f64::NAN, 2.0]);
    assert!(nan.n == 3 && nan.mean.is_nan() && nan.sd.is_nan() && nan.median.is_nan());
}

#[test]
fn mann_whitney_auto_matches_scipy() {
    use MwuMethod::{Asymptotic, Exact};
    // (x, y, U₁, p, r, the method scipy's auto rule picks); r from its definition P(X>Y) − P(X<Y).
    let cases: [(&[f64], &[f64], f64, f64, f64, MwuMethod); 7] = [
        (&A_X, &A_Y, 5.0, 0.04797979797979798, -0.7142857142857143, Exact), // 5 vs 7, no ties
        (&B_X, &B_Y, 35.0, 0.008791208791208791, 0.9444444444444444, Exact), // 3 vs 12, no ties
        (&C_X, &C_Y, 23.0, 0.016095680379275525, -0.6166666666666667, Asymptotic), // 10 vs 12
        (&D_X, &D_Y, 3.0, 0.09934224785346528, -0.7, Asymptotic), // 4 vs 5, ties
        (&E_X, &E_Y, 158.0, 0.0009334003600208308, 0.7555555555555555, Asymptotic), // 12 vs 15, ties
        (&G_X, &G_Y, 17.0, 0.04342063165592577, -0.575, Exact), // 8 vs 10: the edge of exact
        (&H_X, &G_Y, 20.0, 0.04545529484905846, -0.5555555555555556, Asymptotic), // 9 vs 10
    ];
    for (i, (x, y, u1, p, r, method)) in cases.into_iter().enumerate() {
        let got = mann_whitney_u(x, y);
        assert_eq!((got.u1, got.method), (u1, method), "case {i}");
        close(got.p, p, 1e-12);
        close(got.rank_biserial, r, 1e-12);
        // Swapping the samples swaps U₁ and U₂, keeps p and flips the sign of r.
        let swapped = mann_whitney_u(y, x);
        assert_eq!(swapped.u1, (x.len() * y.len()) as f64 - u1, "case {i}");
        close(swapped.p, p, 1e-12);
        close(swapped.rank_biserial, -r, 1e-12);
    }
}

#[test]
fn mann_whitney_forced_methods_match_scipy() {
    let cases: [(&[f64], &[f64], MwuMethod, f64, f64); 3] = [
        (&A_X, &A_Y, MwuMethod::Asymptotic, 5.0, 0.05131990358807116),
        (&C_X, &C_Y, MwuMethod::Exact, 23.0, 0.013769512221524605),
        (&D_X, &D_Y, MwuMethod::Exact, 3.0, 0.1111111111111111), // exact ignores the ties
    ];
    for (x, y, method, u1, p) in cases {
        let got = mann_whitney_u_with(x, y, method);
        assert_eq!((got.u1, got.method), (u1, method));
        close(got.p, p, 1e-12);
    }
    // 60 against 60: counts beyond 2⁶⁴, where scipy switches to floats. Python's integers
    // (another recursion, on the largest pooled value) give 0.02657650546800615; scipy's floats
    // 0.026576505468005968.
    let (x, y) = (f_x(), f_y());
    let exact = mann_whitney_u_with(&x, &y, MwuMethod::Exact);
    assert_eq!(exact.u1, 1378.0);
    close(exact.p, 0.02657650546800615, 1e-14);
    close(exact.p, 0.026576505468005968, 1e-12);
    close(mann_whitney_u_with(&x, &y, MwuMethod::Asymptotic).p, 0.02694585619564296, 1e-12);
    assert_eq!(mann_whitney_u(&x, &y).method, MwuMethod::Asymptotic, "auto: both samples above 8");
}

#[test]
fn mann_whitney_exact_beyond_128_bits() {
    // C(140, 70) ≈ 9·10⁴⁰ > 2¹²⁸: the exact count is refused, not approximated silently.
    let x: Vec<f64> = (0..70).map(f64::from).collect();
    let y: Vec<f64> = (0..70).map(|j| f64::from(j) + 0.5).collect();
    let exact = mann_whitney_u_with(&x, &y, MwuMethod::Exact);
    assert!(exact.p.is_nan() && exact.u1 == (0..70).sum::<i32>() as f64, "{exact:?}");
    // Auto with 8 against 300,000 would pick exact, whose count C(300008, 8) ≈ 1.6·10³⁹ does not
    // fit: it falls back to the normal approximation and says so.
    let small: Vec<f64> = (0..8).map(|i| f64::from(i) * 1000.0 + 0.25).collect();
    let large: Vec<f64> = (0..300_000).map(f64::from).collect();
    let auto = mann_whitney_u(&small, &large);
    let asymptotic = mann_whitney_u_with(&small, &large, MwuMethod::Asymptotic);
    assert_eq!(auto, asymptotic);
    assert!(auto.p.is_finite());
}

#[test]
fn mann_whitney_degenerate_inputs_are_nan() {
    for (x, y) in [(&[][..], &[1.0, 2.0][..]), (&[1.0], &[]), (&[], &[]), (&[1.0, f64::NAN], &[2.0])] {
        let got = mann_whitney_u(x, y);
        assert!(got.u1.is_nan() && got.p.is_nan() && got.rank_biserial.is_nan(), "{x:?} {y:?}: {got:?}");
    }
    for method in [MwuMethod::Auto, MwuMethod::Exact, MwuMethod::Asymptotic] {
        let tied = mann_whitney_u_with(&[2.0, 2.0, 2.0], &[2.0, 2.0], method);
        assert!(tied.u1 == 3.0 && tied.rank_biserial == 0.0 && tied.p.is_nan(), "{method:?}: {tied:?}");
    }
    // One value each is not degenerate: the exact p of the only two orderings is 1.
    let one = mann_whitney_u(&[1.0], &[2.0]);
    assert_eq!((one.u1, one.p, one.rank_biserial, one.method), (0.0, 1.0, -1.0, MwuMethod::Exact));
}

#[test]
fn erfc_matches_scipy() {
    let table = [
        (0.0, 1.0),
        (0.3, 0.6713732405408726),
        (0.99, 0.16149193044463017),
        (1.0, 0.15729920705028516),
        (1.7, 0.01620954140922544),
        (3.2, 6.025761151762082e-06),
        (5.5, 7.357847917974398e-15),
        (12.0, 1.3562611692059047e-64),
        (26.5, 2.2109076642637343e-307),
        (-0.8, 1.7421009647076606),
        (-2.5, 1.999593047982555),
    ];
    for (x, want) in table {
        close(erfc(x), want, 1e-14);
    }
    assert_eq!(erfc(30.0), 0.0);
    assert!(erfc(f64::NAN).is_nan());
}

#[test]
fn spearman_matches_scipy_with_ties() {
    close(spearman(&S1_X, &S1_Y), 0.93812095999547, 1e-13);
    close(spearman(&S2_X, &S2_Y), -0.9558620622687474, 1e-13);
    close(spearman(&BX, &BY), 0.38507991154711396, 1e-13);
    assert_eq!(spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]), -1.0);
    assert!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_nan(), "constant sample");
    assert!(spearman(&[1.0], &[2.0]).is_nan(), "one pair");
    assert!(spearman(&[1.0, 2.0], &[1.0, 2.0, 3.0]).is_nan(), "lengths differ");
    assert!(spearman(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0]).is_nan());
}

#[test]
fn bootstrap_is_a_function_of_the_seed() {
    let diff = |seed| bootstrap_mean_diff(&E_X, &E_Y, 2_000, seed);
    let rho = |seed| bootstrap_spearman(&BX, &BY, 2_000, seed);
    let bits = |i: Interval| [i.estimate, i.low, i.high].map(f64::to_bits);
    assert_eq!(bits(diff(1)), bits(diff(1)));
    assert_eq!(bits(rho(1)), bits(rho(1)));
    assert_ne!(bits(diff(1)), bits(diff(2)));
    assert_ne!(bits(rho(1)), bits(rho(2)));
    // The estimate does not depend on the seed; only the interval does.
    assert_eq!(diff(1).estimate, diff(2).estimate);
    // Threads play no part: the same call on a busy rayon pool gives the same bits.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    let on_pool: Vec<Interval> = pool.install(|| {
        use rayon::prelude::*;
        (0..4).into_par_iter().map(|_| rho(1)).collect()
    });
    assert!(on_pool.into_iter().all(|i| bits(i) == bits(rho(1))));
}

#[test]
fn bootstrap_mean_diff_width_matches_normal_theory() {
    // Two large normal samples with known sd: the percentile interval of the difference of means
    // is close to the normal one, ±1.96·√(σ₁²/n₁ + σ₂²/n₂) around the estimate.
    let mut rng = crate::rng::stream(5, "stats-test");
    let x: Vec<f64> = crate::rng::normals(&mut rng, 500).into_iter().map(f64::from).collect();
    let y: Vec<f64> = crate::rng::normals(&mut rng, 400).into_iter().map(|v| 0.3 + 2.0 * f64::from(v)).collect();
    let got = bootstrap_mean_diff(&x, &y, BOOTSTRAP_RESAMPLES, 11);
    assert_eq!(got.estimate, mean(&x) - mean(&y));
    assert_eq!((got.resamples, got.undefined), (BOOTSTRAP_RESAMPLES, 0));
    assert!(got.low < got.estimate && got.estimate < got.high, "{got:?}");
    let width = got.high - got.low;
    let known = 2.0 * 1.96 * (1.0 / 500.0 + 4.0 / 400.0_f64).sqrt();
    assert!((width / known - 1.0).abs() < 0.10, "width {width} against {known} from the known sd");
    // Against the sample sds the only differences are Monte Carlo error (about 1 % of the width
    // at 10,000 resamples) and the bootstrap's n rather than n − 1: within 5 %.
    let (sx, sy) = (summary(&x).sd, summary(&y).sd);
    let sample = 2.0 * 1.96 * (sx * sx / 500.0 + sy * sy / 400.0).sqrt();
    assert!((width / sample - 1.0).abs() < 0.05, "width {width} against {sample} from the sample sd");
}

#[test]
fn bootstrap_spearman_matches_scipy_percentile_interval() {
    // scipy.stats.bootstrap(method='percentile', paired, 10,000 resamples) on BX, BY, over 100 seeds:
    // mean endpoints [0.01251, 0.67775], their sd across seeds [0.00569, 0.00297]. Ours is one
    // more Monte Carlo draw of the same quantiles (another generator), so it should lie within 4 sd
    // of scipy's mean (whose own error, sd/10, is negligible): |Δ| < 4 sd fails by chance about
    // once in 15,000 seeds per endpoint.
    let got = bootstrap_spearman(&BX, &BY, BOOTSTRAP_RESAMPLES, 3);
    close(got.estimate, 0.38507991154711396, 1e-13);
    assert_eq!(got.undefined, 0, "a constant resample of 30 pairs is vanishingly rare");
    assert!((got.low - 0.012510597550571578).abs() < 4.0 * 0.005692200859050079, "{got:?}");
    assert!((got.high - 0.6777539667537651).abs() < 4.0 * 0.002967694661686275, "{got:?}");
    assert!(got.low < got.estimate && got.estimate < got.high);
}

#[test]
fn bootstrap_spearman_drops_and_counts_undefined_resamples() {
    // x = [1, 1, 1, 2]: a resample of the pairs is undefined when its x are all tied (all four
    // draws among the first three pairs, 81/256, or all the last, 1/256) or its y are (all four
    // draws the same pair, already counted): 82/256 of the resamples. With 10,000 the binomial sd
    // of the count is 47, so it lies within 5 sd of 3,203.
    let got = bootstrap_spearman(&[1.0, 1.0, 1.0, 2.0], &[1.0, 2.0, 3.0, 4.0], BOOTSTRAP_RESAMPLES, 8);
    let expected = BOOTSTRAP_RESAMPLES as f64 * 82.0 / 256.0;
    assert!((got.undefined as f64 - expected).abs() < 5.0 * 47.0, "{got:?}");
    assert!(got.low.is_finite() && got.high.is_finite() && got.low <= got.high, "{got:?}");
}

#[test]
fn bootstrap_degenerate_inputs() {
    for got in [
        bootstrap_mean_diff(&[], &[1.0, 2.0], 100, 0),
        bootstrap_mean_diff(&[1.0, f64::NAN], &[1.0, 2.0], 100, 0),
        bootstrap_spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0], 100, 0),
        bootstrap_spearman(&[1.0, 2.0], &[1.0], 100, 0),
    ] {
        assert!(got.estimate.is_nan() && got.low.is_nan() && got.high.is_nan(), "{got:?}");
        assert_eq!(got.undefined, 100);
    }
    // No resamples: an estimate without an interval.
    let none = bootstrap_mean_diff(&A_X, &A_Y, 0, 0);
    assert!(none.estimate.is_finite() && none.low.is_nan() && none.high.is_nan());
    // One value per group: every resample is the data, so the interval is the point.
    let one = bootstrap_mean_diff(&[1.0], &[3.5], 100, 0);
    assert_eq!((one.estimate, one.low, one.high, one.undefined), (-2.5, -2.5, -2.5, 0));
}

/// Holm's adjustment by hand: sorted 0.005, 0.01, 0.03, 0.04 of m = 4 give 4·0.005 = 0.02,
/// 3·0.01 = 0.03, 2·0.03 = 0.06, then 1·0.04 = 0.04 raised to the running maximum 0.06; a NaN
/// neither counts nor moves; large products are capped at 1.
#[test]
fn holm_adjusts_by_hand() {
    let got = holm(&[0.01, 0.04, f64::NAN, 0.03, 0.005]);
    let want = [0.03, 0.06, f64::NAN, 0.06, 0.02];
    for (g, w) in got.iter().zip(want) {
        assert!((g.is_nan() && w.is_nan()) || (g - w).abs() < 1e-15, "{got:?} against {want:?}");
    }
    assert_eq!(holm(&[0.3, 0.5]), vec![0.6, 0.6]);
    assert_eq!(holm(&[0.6, 0.9]), vec![1.0, 1.0]);
    assert!(holm(&[]).is_empty());
}
