/*!
The modular-arithmetic dataset: every ordered pair `(a, b)` with `0 ≤ a, b < p`, its label, its
token sequence, and a seeded train/validation split. Row `i` is the pair `a = i div p`,
`b = i mod p` (the goldens' layout), so a row index is also a stable key across tables.
*/

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use polars::prelude::{Column, DataFrame};

use crate::config::DataConfig;
use crate::rng;
use crate::tables::{self, schemas};

/// The whole dataset in memory.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The settings it was made from.
    pub config: DataConfig,
    /// Labels `c` of every row (length `p²`).
    pub labels: Vec<u32>,
    /// Token sequences of every row, flattened (`p² × n_ctx`).
    pub tokens: Vec<u32>,
    /// Positions per sequence (2, or 3 with the `=` token).
    pub n_ctx: usize,
    /// Training rows, sorted.
    pub train: Vec<u32>,
    /// Validation rows, sorted.
    pub val: Vec<u32>,
}

impl Dataset {
    /// Builds the dataset; the split takes the first `round(train_frac·p²)` rows of a seeded
    /// permutation.
    pub fn generate(config: &DataConfig) -> Dataset {
        let p = config.p;
        let n = (p * p) as usize;
        let n_ctx = if config.eq_token { 3 } else { 2 };
        let mut labels = Vec::with_capacity(n);
        let mut tokens = Vec::with_capacity(n * n_ctx);
        for a in 0..p {
            for b in 0..p {
                labels.push(config.operation.apply(a, b, p) as u32);
                tokens.push(a as u32);
                tokens.push(if config.separate_vocab { (b + p) as u32 } else { b as u32 });
                if config.eq_token {
                    tokens.push(p as u32);
                }
            }
        }
        let n_train = ((n as f64) * config.train_frac).round() as usize;
        let perm = rng::permutation(&mut rng::stream(config.split_seed, "split"), n);
        let mut train: Vec<u32> = perm[..n_train].iter().map(|&i| i as u32).collect();
        let mut val: Vec<u32> = perm[n_train..].iter().map(|&i| i as u32).collect();
        train.sort_unstable();
        val.sort_unstable();
        Dataset { config: config.clone(), labels, tokens, n_ctx, train, val }
    }

    /// Number of rows (`p²`).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Never true (p ≥ 2); here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Flat tokens (`rows × n_ctx`) and labels of the given rows.
    pub fn gather(&self, rows: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let mut toks = Vec::with_capacity(rows.len() * self.n_ctx);
        let mut labs = Vec::with_capacity(rows.len());
        for &r in rows {
            let r = r as usize;
            toks.extend_from_slice(&self.tokens[r * self.n_ctx..(r + 1) * self.n_ctx]);
            labs.push(self.labels[r]);
        }
        (toks, labs)
    }

    /// Token and label tensors for the given rows: `(rows, n_ctx)` u32 and `(rows,)` u32.
    pub fn batch(&self, rows: &[u32], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
        let (toks, labs) = self.gather(rows);
        Ok((
            Tensor::from_vec(toks, (rows.len(), self.n_ctx), device)?,
            Tensor::from_vec(labs, rows.len(), device)?,
        ))
    }

    /// All rows `0..p²`.
    pub fn all_rows(&self) -> Vec<u32> {
        (0..self.len() as u32).collect()
    }

    /// The dataset as its tidy table (see [`schemas::DATASET`]).
    pub fn to_frame(&self) -> Result<DataFrame> {
        let p = self.config.p as i64;
        let n = self.len();
        let mut is_train = vec![false; n];
        for &r in &self.train {
            is_train[r as usize] = true;
        }
        let mut cols = vec![
            Column::new("row".into(), (0..n as i64).collect::<Vec<_>>()),
            Column::new("a".into(), (0..n as i64).map(|i| i / p).collect::<Vec<_>>()),
            Column::new("b".into(), (0..n as i64).map(|i| i % p).collect::<Vec<_>>()),
            Column::new("c".into(), self.labels.iter().map(|&c| c as i64).collect::<Vec<_>>()),
            Column::new(
                "split".into(),
                is_train.iter().map(|&t| if t { "train" } else { "val" }).collect::<Vec<_>>(),
            ),
        ];
        for pos in 0..self.n_ctx {
            let name = format!("x{pos}");
            let v: Vec<i64> = (0..n).map(|i| self.tokens[i * self.n_ctx + pos] as i64).collect();
            cols.push(Column::new(name.as_str().into(), v));
        }
        Ok(DataFrame::new(n, cols)?)
    }

    /// Writes the table with the data config in its metadata.
    pub fn write(&self, path: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
        let mut meta = meta.clone();
        meta.insert("data_config".into(), serde_json::to_string(&self.config)?);
        tables::write_parquet(&mut self.to_frame()?, &schemas::DATASET, path, &meta)
    }

    /// Reads a dataset table and checks that it is the dataset `config` describes (same rows,
    /// labels and split), so that a run never trains on a table made for other settings.
    pub fn read_checked(path: &Path, config: &DataConfig) -> Result<Dataset> {
        let df = tables::read_parquet(path, &schemas::DATASET)?;
        let expected = Dataset::generate(config);
        let split = tables::col_str(&df, "split", path)?;
        let c = tables::col_i64(&df, "c", path)?;
        if split.len() != expected.len() {
            bail!(
                "{}: has {} rows but the config (p = {}) needs {}; regenerate it with gen-data",
                path.display(), split.len(), config.p, expected.len()
            );
        }
        let train: Vec<u32> = split.iter().enumerate().filter(|(_, s)| *s == "train").map(|(i, _)| i as u32).collect();
        if train != expected.train {
            bail!("{}: column `split` does not match data.split_seed = {} and data.train_frac = {}; regenerate it with gen-data", path.display(), config.split_seed, config.train_frac);
        }
        if c.iter().zip(&expected.labels).any(|(x, y)| *x != *y as i64) {
            bail!("{}: column `c` does not match data.operation = {}", path.display(), config.operation.name());
        }
        Ok(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Operation;

    fn cfg(p: u64, op: Operation, frac: f64) -> DataConfig {
        DataConfig { p, operation: op, train_frac: frac, ..DataConfig::default() }
    }

    #[test]
    fn labels_match_hand_computation() {
        // (a, b) = (5, 9) at p = 11: row 5·11 + 9 = 64.
        let cases = [(Operation::Add, 3), (Operation::Sub, 7), (Operation::Mul, 1), (Operation::X2xyy2, (25 + 45 + 81) % 11)];
        for (op, want) in cases {
            let d = Dataset::generate(&cfg(11, op, 0.5));
            assert_eq!(d.labels[64], want, "{op:?}");
            assert_eq!(&d.tokens[128..130], &[5, 9]);
        }
        // Exhaustively for sub at p = 7, against i64 arithmetic.
        let d = Dataset::generate(&cfg(7, Operation::Sub, 0.5));
        for a in 0..7i64 {
            for b in 0..7i64 {
                assert_eq!(d.labels[(a * 7 + b) as usize] as i64, (a - b).rem_euclid(7));
            }
        }
    }

    #[test]
    fn split_sizes_and_determinism() {
        let d = Dataset::generate(&cfg(59, Operation::Add, 0.8));
        assert_eq!(d.train.len(), 2785); // round(0.8 · 3481)
        assert_eq!(d.val.len(), 696);
        let mut all: Vec<u32> = d.train.iter().chain(&d.val).copied().collect();
        all.sort();
        assert_eq!(all, d.all_rows());
        let again = Dataset::generate(&cfg(59, Operation::Add, 0.8));
        assert_eq!(again.train, d.train);
        let other = Dataset::generate(&DataConfig { split_seed: 1, ..cfg(59, Operation::Add, 0.8) });
        assert_ne!(other.train, d.train);
        assert_eq!(Dataset::generate(&cfg(2, Operation::Add, 1.0)).train.len(), 4);
    }

    #[test]
    fn token_layouts() {
        let eq = Dataset::generate(&DataConfig { eq_token: true, ..cfg(5, Operation::Add, 0.5) });
        assert_eq!(eq.n_ctx, 3);
        assert_eq!(&eq.tokens[3 * 7..3 * 8], &[1, 2, 5]);
        let sep = Dataset::generate(&DataConfig { separate_vocab: true, ..cfg(5, Operation::Add, 0.5) });
        assert_eq!(&sep.tokens[2 * 7..2 * 8], &[1, 7]);
    }

    #[test]
    fn table_round_trip_and_mismatch() {
        let dir = std::env::temp_dir().join(format!("data-test-{}", std::process::id()));
        let path = dir.join("dataset.parquet");
        let c = cfg(13, Operation::Add, 0.3);
        let d = Dataset::generate(&c);
        d.write(&path, &BTreeMap::new()).unwrap();
        let back = Dataset::read_checked(&path, &c).unwrap();
        assert_eq!(back.train, d.train);
        let e = Dataset::read_checked(&path, &DataConfig { split_seed: 3, ..c.clone() }).unwrap_err();
        assert!(format!("{e:#}").contains("split_seed"));
        let e = Dataset::read_checked(&path, &cfg(11, Operation::Add, 0.3)).unwrap_err();
        assert!(format!("{e:#}").contains("169 rows"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
