//! The columns that identify a run and a checkpoint in every per-run table, written from
//! [`RunIdent`] and [`RowKey`] here and nowhere else.

use polars::prelude::Column;

use crate::run::RowKey;

/// Key columns (`RUN_ID_COLUMNS`, `step`, `checkpoint`) for rows with these keys.
pub fn key_columns<'a>(keys: impl Iterator<Item = &'a RowKey> + Clone) -> Vec<Column> {
    let id = keys.clone().map(|k| &k.ident);
    vec![
        Column::new("run".into(), id.clone().map(|i| i.run.as_str()).collect::<Vec<_>>()),
        Column::new("p".into(), id.clone().map(|i| i.p).collect::<Vec<_>>()),
        Column::new("alpha".into(), id.clone().map(|i| i.alpha).collect::<Vec<_>>()),
        Column::new("seed".into(), id.clone().map(|i| i.seed).collect::<Vec<_>>()),
        Column::new("weight_decay".into(), id.clone().map(|i| i.weight_decay).collect::<Vec<_>>()),
        Column::new("train_frac".into(), id.clone().map(|i| i.train_frac).collect::<Vec<_>>()),
        Column::new("d_model".into(), id.map(|i| i.d_model).collect::<Vec<_>>()),
        Column::new("step".into(), keys.clone().map(|k| k.step).collect::<Vec<_>>()),
        Column::new("checkpoint".into(), keys.map(|k| k.checkpoint.as_str()).collect::<Vec<_>>()),
    ]
}
