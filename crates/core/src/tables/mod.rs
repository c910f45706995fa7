/*!
All parquet I/O, and the only module that uses polars (`tests/layering.rs` holds the rest of the
source to that). Every table is written through [`write_parquet`] (zstd, fixed statistics, key-value
metadata, atomic rename) and read through [`read_parquet`], which checks the columns against the
table's [`Schema`] so that a wrong or truncated file fails with the file and column named rather
than somewhere deep in an analysis.

Each table has one submodule holding its schema (a [`Schema`] constant), its row type, its writer
and its reader, so that adding a column is one edit: [`dataset`], [`train`] (`metrics.parquet`),
[`analysis`] (checkpoint-scan, symmetry), [`llc`] and [`bench`]. The run-identifying key columns
every per-run table starts with are [`ids`]. `docs/tables.md`, `docs/tables-analysis.md` and
`docs/llc.md` hold each schema's column table verbatim (tests keep them in step).
*/

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::{
    Column as PlColumn, DataFrame, DataType, Int64Type, IntoSeries, KeyValueMetadata, ListBuilderTrait, ListPrimitiveChunkedBuilder, ParquetCompression,
    ParquetReader, ParquetWriter, SerReader, StatisticsOptions,
};

use crate::fsio;

pub mod analysis;
pub mod bench;
pub mod dataset;
pub mod ids;
pub mod llc;
pub mod train;

/// The tables documented in `docs/tables.md` (the analysis and LLC tables have their own pages).
pub const DOCUMENTED: &[&Schema] = &[&dataset::DATASET, &train::TRAIN_METRICS, &bench::BENCH];

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

/// A [`Column`] (for the schema constants).
pub(crate) const fn col(name: &'static str, dtype: ColType, doc: &'static str) -> Column {
    Column { name, dtype, doc }
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
    /// A list of 64-bit signed integers per row.
    ListI64,
}

impl ColType {
    fn polars(self) -> DataType {
        match self {
            ColType::I64 => DataType::Int64,
            ColType::F64 => DataType::Float64,
            ColType::Str => DataType::String,
            ColType::Bool => DataType::Boolean,
            ColType::ListI64 => DataType::List(Box::new(DataType::Int64)),
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

/// The column `name` of `df`, or an error naming the file.
fn column<'a>(df: &'a DataFrame, name: &str, path: &Path) -> Result<&'a PlColumn> {
    df.column(name).with_context(|| format!("{}: no column `{name}`", path.display()))
}

/// Every value of a column, or an error naming the file and the column at the first null.
fn non_null<T>(values: impl Iterator<Item = Option<T>>, name: &str, path: &Path) -> Result<Vec<T>> {
    values.map(|v| v.with_context(|| format!("{}: null in column `{name}`", path.display()))).collect()
}

/// Typed column access with errors that name the file and the column.
pub fn col_i64(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<i64>> {
    let ca = column(df, name, path)?.i64().with_context(|| format!("{}: column `{name}` is not i64", path.display()))?;
    non_null(ca.iter(), name, path)
}

/// See [`col_i64`].
pub fn col_f64(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<f64>> {
    let ca = column(df, name, path)?.f64().with_context(|| format!("{}: column `{name}` is not f64", path.display()))?;
    non_null(ca.iter(), name, path)
}

/// See [`col_i64`].
pub fn col_str(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<String>> {
    let ca = column(df, name, path)?.str().with_context(|| format!("{}: column `{name}` is not a string", path.display()))?;
    non_null(ca.iter().map(|v| v.map(str::to_owned)), name, path)
}

/// See [`col_i64`].
pub fn col_bool(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<bool>> {
    let ca = column(df, name, path)?.bool().with_context(|| format!("{}: column `{name}` is not boolean", path.display()))?;
    non_null(ca.iter(), name, path)
}

/// See [`col_i64`]; a column of integer lists.
pub fn col_list_i64(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<Vec<i64>>> {
    let ca = column(df, name, path)?.list().with_context(|| format!("{}: column `{name}` is not a list", path.display()))?;
    if ca.is_empty() {
        return Ok(Vec::new());
    }
    non_null(ca.amortized_iter(), name, path)?
        .into_iter()
        .map(|s| {
            let inner = s.as_ref().i64().with_context(|| format!("{}: column `{name}` is not a list of i64", path.display()))?;
            non_null(inner.iter(), name, path)
        })
        .collect()
}

/// A column of integer lists (`List(Int64)`), one list per row.
fn list_i64(name: &str, rows: impl Iterator<Item = Vec<i64>>) -> PlColumn {
    let mut b = ListPrimitiveChunkedBuilder::<Int64Type>::new(name.into(), 0, 0, DataType::Int64);
    for r in rows {
        b.append_slice(&r);
    }
    b.finish().into_series().into()
}


/// The values of one column, for assembling a table by hand without polars (the synthetic
/// tables of the tests).
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) enum Values {
    I64(Vec<i64>),
    F64(Vec<f64>),
    Str(Vec<String>),
    Bool(Vec<bool>),
    ListI64(Vec<Vec<i64>>),
}

#[cfg(test)]
macro_rules! values_from {
    ($($t:ty => $variant:ident),*) => {
        $(impl From<Vec<$t>> for Values {
            fn from(v: Vec<$t>) -> Values {
                Values::$variant(v.into_iter().map(Into::into).collect())
            }
        })*
    };
}
#[cfg(test)]
values_from!(i64 => I64, f64 => F64, &str => Str, String => Str, bool => Bool, Vec<i64> => ListI64);

/// Writes the given columns, adding every other column of `schema` with a neutral value (0,
/// NaN, empty, false, an empty list), so that synthetic tables follow the documented schemas as
/// they grow.
#[cfg(test)]
pub(crate) fn write_filled(cols: Vec<(&str, Values)>, schema: &Schema, path: &Path) {
    let n = match &cols[0].1 {
        Values::I64(v) => v.len(),
        Values::F64(v) => v.len(),
        Values::Str(v) => v.len(),
        Values::Bool(v) => v.len(),
        Values::ListI64(v) => v.len(),
    };
    let mut out: Vec<PlColumn> = cols
        .into_iter()
        .map(|(name, v)| match v {
            Values::I64(v) => PlColumn::new(name.into(), v),
            Values::F64(v) => PlColumn::new(name.into(), v),
            Values::Str(v) => PlColumn::new(name.into(), v),
            Values::Bool(v) => PlColumn::new(name.into(), v),
            Values::ListI64(v) => list_i64(name, v.into_iter()),
        })
        .collect();
    for c in schema.columns {
        if out.iter().any(|x| x.name().as_str() == c.name) {
            continue;
        }
        out.push(match c.dtype {
            ColType::I64 => PlColumn::new(c.name.into(), vec![0i64; n]),
            ColType::F64 => PlColumn::new(c.name.into(), vec![f64::NAN; n]),
            ColType::Str => PlColumn::new(c.name.into(), vec![""; n]),
            ColType::Bool => PlColumn::new(c.name.into(), vec![false; n]),
            ColType::ListI64 => list_i64(c.name, std::iter::repeat_n(Vec::new(), n)),
        });
    }
    let mut df = DataFrame::new(n, out).unwrap();
    write_parquet(&mut df, schema, path, &BTreeMap::new()).unwrap();
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

    /// A list column round-trips, empty lists included, and its type is checked.
    #[test]
    fn list_columns_round_trip() {
        const L: Schema = Schema { name: "l", columns: &[Column { name: "k", dtype: ColType::ListI64, doc: "" }] };
        let path = std::env::temp_dir().join(format!("tables-list-{}.parquet", std::process::id()));
        let rows = vec![vec![3i64, 6, 15], vec![], vec![1]];
        let mut df = DataFrame::new(3, vec![list_i64("k", rows.clone().into_iter())]).unwrap();
        write_parquet(&mut df, &L, &path, &BTreeMap::new()).unwrap();
        let back = read_parquet(&path, &L).unwrap();
        assert_eq!(col_list_i64(&back, "k", &path).unwrap(), rows);
        assert_eq!(back.column("k").unwrap().dtype(), &DataType::List(Box::new(DataType::Int64)));
        std::fs::remove_file(&path).unwrap();
    }

    /// docs/tables.md holds every schema's generated column table verbatim, so a column cannot
    /// be added without being documented.
    #[test]
    fn docs_list_every_column() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tables.md");
        let text = std::fs::read_to_string(&path).expect("docs/tables.md");
        let mut missing = Vec::new();
        for schema in super::DOCUMENTED {
            let table = schema.markdown();
            if !text.contains(&table) {
                missing.push(format!("### `{}`\n\n{table}", schema.name));
            }
        }
        assert!(missing.is_empty(), "docs/tables.md is out of date; these tables should appear verbatim:\n{}", missing.join("\n"));
    }
}
