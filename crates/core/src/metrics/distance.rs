/*!
Distance irrelevance (reference section 4): how much a logit depends on the distance `a − b`
between the operands once their sum `a + b` is fixed.

Put the value of every pair in a `p×p` table at row `(a + b) mod p`, column `(a − b) mod p`;
DI = (mean over columns of the population std down each column) / (population std of the whole
table). A column holds the `p` pairs with one difference and every sum. A Pizza's correct logit
carries a factor `|cos(w(a−b)/2)|`: it depends mostly on the difference, so it varies little down
a column and DI is small. A Clock's correct logit `Σ cos(w(a+b−c))` at `c = a+b` does not depend
on the difference at all, so each column spreads as much as the whole table and DI ≈ 1.

For odd `p` the map `(a, b) → ((a+b) mod p, (a−b) mod p)` is a bijection onto the table. For even
`p` it is two-to-one onto half the cells; the statistics are then taken over the `p` pairs of
each column directly, which is the same formula without the empty cells.
*/

/// DI of per-pair values (`values[a·p + b]`). NaN when the table is constant.
pub fn distance_irrelevance(values: &[f64], p: usize) -> f64 {
    assert_eq!(values.len(), p * p, "one value per pair");
    let std = |xs: &[f64]| -> f64 {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
    };
    let total = std(values);
    if total == 0.0 || !total.is_finite() {
        return f64::NAN;
    }
    let mut column = Vec::with_capacity(p);
    let mut sum = 0.0;
    for diff in 0..p {
        column.clear();
        for a in 0..p {
            let b = (a + p - diff) % p;
            column.push(values[a * p + b]);
        }
        sum += std(&column);
    }
    sum / p as f64 / total
}

/// The correct-class logit and the largest wrong logit of every pair, from row-major logits
/// (`p² × vocab`). Only the answer classes `0..p` compete for "largest wrong".
pub fn correct_and_top_wrong(logits: &[f64], vocab: usize, labels: &[u32], p: usize) -> (Vec<f64>, Vec<f64>) {
    let mut correct = Vec::with_capacity(labels.len());
    let mut wrong = Vec::with_capacity(labels.len());
    for (i, &c) in labels.iter().enumerate() {
        let row = &logits[i * vocab..i * vocab + p];
        correct.push(row[c as usize]);
        let w = row
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != c as usize)
            .map(|(_, &x)| x)
            .fold(f64::NEG_INFINITY, f64::max);
        wrong.push(w);
    }
    (correct, wrong)
}
