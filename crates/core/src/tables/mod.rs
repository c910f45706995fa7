/*!
All parquet I/O. Every table is written through [`write_parquet`] (zstd, fixed statistics,
key-value metadata, atomic rename) and read through [`read_parquet`], which checks the columns
against the table's [`Schema`] so that a wrong or truncated file fails with the file and column
named rather than somewhere deep in an analysis.

Each table's schema is one function in a submodule named after the table; the README documents the
same columns.
*/

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::{DataFrame, DataType, KeyValueMetadata, ParquetCompression, ParquetReader, ParquetWriter, SerReader, StatisticsOptions};

use crate::fsio;

pub mod analysis;
pub mod ids;
pub mod llc;
pub mod schemas;

/// One column of a documented table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column name as it appears in the parquet file.
    pub name: &'static str,
    /// Its polars type.
    pub dtype: ColType,
    /// One line for the README.
    pub doc: &'static str,
}

/// The column types the pipeline uses (a small, stable subset of polars' types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// 64-bit signed integer.
    I64,
    /// 64-bit float.
    F64,
    /// UTF-8 string.
    Str,
    /// Boolean.
    Bool,
}

impl ColType {
    fn polars(self) -> DataType {
        match self {
            ColType::I64 => DataType::Int64,
            ColType::F64 => DataType::Float64,
            ColType::Str => DataType::String,
            ColType::Bool => DataType::Boolean,
        }
    }
}

/// A table's documented schema: the columns every file of this table must have.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// Table name (also the usual file stem).
    pub name: &'static str,
    /// The columns, in file order.
    pub columns: &'static [Column],
}

impl Schema {
    /// Checks that `df` has every documented column with its documented type.
    pub fn check(&self, df: &DataFrame, path: &Path) -> Result<()> {
        for col in self.columns {
            let Some(c) = df.column(col.name).ok() else {
                bail!(
                    "{}: table `{}` is missing column `{}` ({})",
                    path.display(),
                    self.name,
                    col.name,
                    col.doc
                );
            };
            let want = col.dtype.polars();
            if c.dtype() != &want {
                bail!(
                    "{}: column `{}` of table `{}` has type {}, expected {}",
                    path.display(),
                    col.name,
                    self.name,
                    c.dtype(),
                    want
                );
            }
        }
        Ok(())
    }

    /// The schema as a markdown table (used to keep the README in step with the code).
    pub fn markdown(&self) -> String {
        let mut s = String::from("| column | type | meaning |\n|---|---|---|\n");
        for c in self.columns {
            s.push_str(&format!("| `{}` | {:?} | {} |\n", c.name, c.dtype, c.doc));
        }
        s
    }
}

/// Key-value metadata of a stage's tables: the stage, the code's `git_sha`, the input files (one
/// per line) and the stage's own settings in `extra`.
pub fn meta(stage: &str, inputs: &[PathBuf], extra: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("stage".into(), stage.to_string());
    meta.insert("git_sha".into(), crate::ckpt::git_sha());
    meta.insert("inputs".into(), inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n"));
    for (k, v) in extra {
        meta.insert((*k).to_string(), v.clone());
    }
    meta
}

/// A detail table beside a stage's main table: `DIR/NAME.parquet` → `DIR/NAME_<suffix>.parquet`.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "table".into());
    out.with_file_name(format!("{stem}_{suffix}.parquet"))
}

/// Writes `df` to `path` atomically, after checking it against `schema`, with `meta` as parquet
/// key-value metadata. Compression and statistics are pinned so that the same frame always gives
/// the same bytes.
pub fn write_parquet(
    df: &mut DataFrame,
    schema: &Schema,
    path: &Path,
    meta: &BTreeMap<String, String>,
) -> Result<()> {
    schema.check(df, path)?;
    let kv: Vec<(String, String)> = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    fsio::write_atomic(path, |w| {
        ParquetWriter::new(w)
            .with_compression(ParquetCompression::Zstd(None))
            .with_statistics(StatisticsOptions::full())
            .with_key_value_metadata(Some(KeyValueMetadata::from_static(kv)))
            .set_parallel(false)
            .finish(df)
            .with_context(|| format!("writing parquet {}", path.display()))?;
        Ok(())
    })
}

/// Runs a polars read, turning a panic inside polars (which some corrupt files cause) into an
/// error that names the file.
fn guarded<T>(path: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            bail!("{}: corrupt parquet file (the reader failed: {msg})", path.display())
        }
    }
}

/// Reads a parquet table and checks it against `schema`.
pub fn read_parquet(path: &Path, schema: &Schema) -> Result<DataFrame> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let df = guarded(path, || {
        ParquetReader::new(file)
            .finish()
            .with_context(|| format!("reading parquet {} (is it a complete parquet file?)", path.display()))
    })?;
    schema.check(&df, path)?;
    Ok(df)
}

/// Reads a parquet file's key-value metadata (config, seed, provenance).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    guarded(path, || {
        let mut reader = ParquetReader::new(file);
        let md = reader
            .get_metadata()
            .with_context(|| format!("reading parquet metadata of {}", path.display()))?;
        let mut out = BTreeMap::new();
        if let Some(kvs) = &md.key_value_metadata {
            for kv in kvs {
                out.insert(kv.key.clone(), kv.value.clone().unwrap_or_default());
            }
        }
        Ok(out)
    })
}

/// Typed column access with errors that name the file and the column.
pub fn col_i64(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<i64>> {
    let c = df.column(name).with_context(|| format!("{}: no column `{name}`", path.display()))?;
    let ca = c.i64().with_context(|| format!("{}: column `{name}` is not i64", path.display()))?;
    ca.iter()
        .map(|v| v.with_context(|| format!("{}: null in column `{name}`", path.display())))
        .collect()
}

/// See [`col_i64`].
pub fn col_f64(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<f64>> {
    let c = df.column(name).with_context(|| format!("{}: no column `{name}`", path.display()))?;
    let ca = c.f64().with_context(|| format!("{}: column `{name}` is not f64", path.display()))?;
    ca.iter()
        .map(|v| v.with_context(|| format!("{}: null in column `{name}`", path.display())))
        .collect()
}

/// See [`col_i64`].
pub fn col_str(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<String>> {
    let c = df.column(name).with_context(|| format!("{}: no column `{name}`", path.display()))?;
    let ca = c.str().with_context(|| format!("{}: column `{name}` is not a string", path.display()))?;
    ca.iter()
        .map(|v| {
            v.map(str::to_owned)
                .with_context(|| format!("{}: null in column `{name}`", path.display()))
        })
        .collect()
}

/// See [`col_i64`].
pub fn col_bool(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<bool>> {
    let c = df.column(name).with_context(|| format!("{}: no column `{name}`", path.display()))?;
    let ca = c.bool().with_context(|| format!("{}: column `{name}` is not boolean", path.display()))?;
    ca.iter()
        .map(|v| v.with_context(|| format!("{}: null in column `{name}`", path.display())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::Column as PlColumn;

    const T: Schema = Schema {
        name: "t",
        columns: &[
            Column { name: "step", dtype: ColType::I64, doc: "" },
            Column { name: "loss", dtype: ColType::F64, doc: "" },
        ],
    };

    #[test]
    fn missing_columns_and_wrong_types_are_named() {
        let dir = std::env::temp_dir().join(format!("tables-test-{}", std::process::id()));
        let path = dir.join("t.parquet");
        let mut good = DataFrame::new(2, vec![PlColumn::new("step".into(), vec![0i64, 1]), PlColumn::new("loss".into(), vec![1.0f64, 0.5])]).unwrap();
        write_parquet(&mut good, &T, &path, &BTreeMap::from([("k".to_string(), "v".to_string())])).unwrap();
        assert_eq!(read_parquet(&path, &T).unwrap().height(), 2);
        assert_eq!(read_metadata(&path).unwrap()["k"], "v");
        assert_eq!(col_f64(&read_parquet(&path, &T).unwrap(), "loss", &path).unwrap(), vec![1.0, 0.5]);

        // Writing a frame that does not match its schema is refused, and nothing is written.
        let bad = dir.join("bad.parquet");
        let mut missing = DataFrame::new(2, vec![PlColumn::new("step".into(), vec![0i64, 1])]).unwrap();
        let e = format!("{:#}", write_parquet(&mut missing, &T, &bad, &BTreeMap::new()).unwrap_err());
        assert!(e.contains("missing column `loss`"), "{e}");
        assert!(!bad.exists());

        // Reading a file with a column missing or of the wrong type names the file and column.
        let other = Schema { name: "t", columns: &[Column { name: "step", dtype: ColType::I64, doc: "" }] };
        let mut only_step = DataFrame::new(2, vec![PlColumn::new("step".into(), vec![0i64, 1])]).unwrap();
        write_parquet(&mut only_step, &other, &bad, &BTreeMap::new()).unwrap();
        let e = format!("{:#}", read_parquet(&bad, &T).unwrap_err());
        assert!(e.contains("bad.parquet") && e.contains("missing column `loss`"), "{e}");
        let mut typed = DataFrame::new(2, vec![PlColumn::new("step".into(), vec![0.0f64, 1.0]), PlColumn::new("loss".into(), vec![1.0f64, 0.5])]).unwrap();
        let loose = Schema { name: "t", columns: &[] };
        write_parquet(&mut typed, &loose, &bad, &BTreeMap::new()).unwrap();
        let e = format!("{:#}", read_parquet(&bad, &T).unwrap_err());
        assert!(e.contains("bad.parquet") && e.contains("`step`") && e.contains("expected i64"), "{e}");

        // A truncated file is an error, not a panic.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        assert!(format!("{:#}", read_parquet(&bad, &T).unwrap_err()).contains("bad.parquet"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
