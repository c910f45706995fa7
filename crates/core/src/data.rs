/*!
The modular-arithmetic dataset: every ordered pair `(a, b)` with `0 ≤ a, b < p`, its label, its
token sequence, and a seeded train/validation split. Row `i` is the pair `a = i div p`,
`b = i mod p` (the goldens' layout), so a row index is also a stable key across tables.

Its settings ([`DataConfig`], [`Operation`]) are the experiment file's `data:` section, and
[`TokenLayout`] is the one place that turns `p` and the two layout switches into a vocabulary, a
context length and token ids: the model's shape, the dataset and the paper's config JSON all ask it.
*/

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::rng;
use crate::tables;

/// The arithmetic operation that defines the label.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `(a + b) mod p` (the paper).
    Add,
    /// `(a − b) mod p` (Nanda).
    Sub,
    /// `(a · b) mod p`.
    Mul,
    /// `(a² + ab + b²) mod p` (Nanda).
    X2xyy2,
}

impl Operation {
    /// The label of the pair `(a, b)`.
    pub fn apply(self, a: u64, b: u64, p: u64) -> u64 {
        match self {
            Operation::Add => (a + b) % p,
            Operation::Sub => (a + p - b % p) % p,
            Operation::Mul => (a * b) % p,
            Operation::X2xyy2 => (a * a + a * b + b * b) % p,
        }
    }

    /// Name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Sub => "sub",
            Operation::Mul => "mul",
            Operation::X2xyy2 => "x2xyy2",
        }
    }
}

/// The dataset: all `p²` pairs with a seeded train/validation split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The modulus (any integer ≥ 2; the paper uses primes).
    pub p: u64,
    /// Operation defining the label.
    pub operation: Operation,
    /// Fraction of the `p²` pairs used for training, in (0, 1].
    pub train_frac: f64,
    /// Seed of the permutation that picks the training rows (the paper's code left it unseeded).
    pub split_seed: u64,
    /// Append Nanda's `=` token (id `p`, vocabulary `p+1`, three positions).
    pub eq_token: bool,
    /// The paper's separate-vocabulary variant: `b` is offset by `p` (vocabulary `2p`).
    pub separate_vocab: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            p: 59,
            operation: Operation::Add,
            train_frac: 0.8,
            split_seed: 0,
            eq_token: false,
            separate_vocab: false,
        }
    }
}

impl DataConfig {
    /// Every pair of the addition table with this layout, all of it training data and no split:
    /// the dataset of a foreign checkpoint (the paper's released files carry no split).
    pub fn all_pairs(layout: TokenLayout) -> DataConfig {
        DataConfig {
            p: layout.p as u64,
            operation: Operation::Add,
            train_frac: 1.0,
            split_seed: 0,
            eq_token: layout.eq_token,
            separate_vocab: layout.separate_vocab,
        }
    }

    /// The token layout of these settings.
    pub fn layout(&self) -> TokenLayout {
        TokenLayout { p: self.p as usize, eq_token: self.eq_token, separate_vocab: self.separate_vocab }
    }
}

/// How a pair `(a, b)` becomes tokens: `a`, then `b` (offset by `p` with separate
/// vocabularies), then the `=` token (id `p`, or `2p` with separate vocabularies) when it is on.
/// The vocabulary is every id that can occur; the output classes are the same ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLayout {
    /// The modulus.
    pub p: usize,
    /// Nanda's `=` token as a third position.
    pub eq_token: bool,
    /// The paper's separate vocabularies for the two operands.
    pub separate_vocab: bool,
}

impl TokenLayout {
    /// The layout of a model of these sizes (the paper's config JSON and our checkpoints store
    /// sizes, not switches): separate vocabularies when there are at least `2p` tokens, the `=`
    /// token when there are three positions.
    pub fn from_sizes(p: usize, vocab: usize, n_ctx: usize) -> TokenLayout {
        TokenLayout { p, eq_token: n_ctx == 3, separate_vocab: vocab >= 2 * p }
    }

    /// Input vocabulary (= output classes): `p`, `2p` with separate vocabularies, plus one for `=`.
    pub fn vocab(&self) -> usize {
        let operands = if self.separate_vocab { 2 * self.p } else { self.p };
        operands + usize::from(self.eq_token)
    }

    /// Positions per sequence: 2, or 3 with the `=` token.
    pub fn n_ctx(&self) -> usize {
        2 + usize::from(self.eq_token)
    }

    /// Appends the tokens of the pair `(a, b)` to `out`.
    pub fn push_tokens(&self, a: usize, b: usize, out: &mut Vec<u32>) {
        let p = self.p;
        out.push(a as u32);
        out.push(if self.separate_vocab { b + p } else { b } as u32);
        if self.eq_token {
            out.push(if self.separate_vocab { 2 * p } else { p } as u32);
        }
    }
}

impl From<&DataConfig> for TokenLayout {
    fn from(data: &DataConfig) -> TokenLayout {
        data.layout()
    }
}

/// Which side of the split a row is on (the `split` column of the dataset and metrics tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training rows.
    Train,
    /// Validation rows.
    Val,
}

impl Split {
    /// The value in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            other => bail!("expected `train` or `val`, got {other:?}"),
        }
    }
}

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
        let layout = config.layout();
        let n_ctx = layout.n_ctx();
        let mut labels = Vec::with_capacity(n);
        let mut tokens = Vec::with_capacity(n * n_ctx);
        for a in 0..p {
            for b in 0..p {
                labels.push(config.operation.apply(a, b, p) as u32);
                layout.push_tokens(a as usize, b as usize, &mut tokens);
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

    /// Writes the table (`tables::dataset`) with the data config in its metadata.
    pub fn write(&self, path: &Path, meta: &BTreeMap<String, String>) -> Result<()> {
        let mut meta = meta.clone();
        meta.insert("data_config".into(), serde_json::to_string(&self.config)?);
        tables::dataset::write(self, path, &meta)
    }

    /// Reads a dataset table and checks that it is the dataset `config` describes (same rows,
    /// labels and split), so that a run never trains on a table made for other settings.
    pub fn read_checked(path: &Path, config: &DataConfig) -> Result<Dataset> {
        let (split, c) = tables::dataset::read(path)?;
        let expected = Dataset::generate(config);
        if split.len() != expected.len() {
            bail!(
                "{}: has {} rows but the config (p = {}) needs {}; regenerate it with gen-data",
                path.display(), split.len(), config.p, expected.len()
            );
        }
        let train: Vec<u32> = split.iter().enumerate().filter(|(_, s)| **s == Split::Train).map(|(i, _)| i as u32).collect();
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
