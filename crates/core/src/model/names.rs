/*!
The tensors of the model under the released checkpoints' names (a contract: `checkpoint-scan`,
`symmetry` and `llc` read them, and the paper's own files use them), with their shapes and the
standard deviation of their initialisation: the one table every part of the code that handles
tensors by name reads ([`super::ModelConfig::param_specs`], the fast path [`super::fast`], the
closed-form embedding gradients of `metrics::gradients`).

[`Param`] names the tensors of a one-layer model (block 0); a deeper model repeats the block
tensors under `blocks.{l}.` ([`Param::in_layer`]). [`ParamSet`] is a set of them, for callers
that need only some gradients.
*/

use super::ModelConfig;

/// One tensor of the model (block tensors: those of block 0). Declared in name order, so that
/// sorting by `Param` sorts by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Param {
    /// `blocks.0.attn.W_K` (n_heads, d_head, d_model).
    WK,
    /// `blocks.0.attn.W_O` (d_model, n_heads·d_head).
    WO,
    /// `blocks.0.attn.W_Q` (n_heads, d_head, d_model).
    WQ,
    /// `blocks.0.attn.W_V` (n_heads, d_head, d_model).
    WV,
    /// `blocks.0.mlp.W_in` (d_mlp, d_model).
    WIn,
    /// `blocks.0.mlp.W_out` (d_model, d_mlp).
    WOut,
    /// `blocks.0.mlp.b_in` (d_mlp).
    BIn,
    /// `blocks.0.mlp.b_out` (d_model).
    BOut,
    /// `embed.W_E` (d_model, vocab).
    WE,
    /// `pos_embed.W_pos` (n_ctx, d_model).
    WPos,
    /// `unembed.W_U` (d_model, vocab).
    WU,
}

impl Param {
    /// Every tensor of a one-layer model, in name order.
    pub const ALL: [Param; 11] = [
        Param::WK,
        Param::WO,
        Param::WQ,
        Param::WV,
        Param::WIn,
        Param::WOut,
        Param::BIn,
        Param::BOut,
        Param::WE,
        Param::WPos,
        Param::WU,
    ];

    /// The checkpoint name (block tensors: block 0's).
    pub const fn name(self) -> &'static str {
        match self {
            Param::WK => "blocks.0.attn.W_K",
            Param::WO => "blocks.0.attn.W_O",
            Param::WQ => "blocks.0.attn.W_Q",
            Param::WV => "blocks.0.attn.W_V",
            Param::WIn => "blocks.0.mlp.W_in",
            Param::WOut => "blocks.0.mlp.W_out",
            Param::BIn => "blocks.0.mlp.b_in",
            Param::BOut => "blocks.0.mlp.b_out",
            Param::WE => "embed.W_E",
            Param::WPos => "pos_embed.W_pos",
            Param::WU => "unembed.W_U",
        }
    }

    /// The tensor with this name in a one-layer model.
    pub fn from_name(name: &str) -> Option<Param> {
        Param::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The name within a block (`attn.W_Q`), for block tensors.
    pub fn block_suffix(self) -> Option<&'static str> {
        self.name().strip_prefix("blocks.0.")
    }

    /// The name of this tensor in block `l` (block tensors), or its own name.
    pub fn in_layer(self, l: usize) -> String {
        match self.block_suffix() {
            Some(s) => format!("blocks.{l}.{s}"),
            None => self.name().to_string(),
        }
    }

    /// The shape in a model of shape `cfg`.
    pub fn shape(self, cfg: &ModelConfig) -> Vec<usize> {
        let (d, v, h, dh, m) = (cfg.d_model, cfg.vocab, cfg.n_heads, cfg.d_head, cfg.d_mlp);
        match self {
            Param::WQ | Param::WK | Param::WV => vec![h, dh, d],
            Param::WO => vec![d, h * dh],
            Param::WIn => vec![m, d],
            Param::WOut => vec![d, m],
            Param::BIn => vec![m],
            Param::BOut => vec![d],
            Param::WE | Param::WU => vec![d, v],
            Param::WPos => vec![cfg.n_ctx, d],
        }
    }

    /// Number of elements in a model of shape `cfg`.
    pub fn len(self, cfg: &ModelConfig) -> usize {
        self.shape(cfg).iter().product()
    }

    /// The paper's initialisation: `randn × std` (0: the tensor starts at zero).
    pub fn init_std(self, cfg: &ModelConfig) -> f64 {
        let sd = 1.0 / (cfg.d_model as f64).sqrt();
        match self {
            Param::WU => 1.0 / (cfg.vocab as f64).sqrt(),
            Param::WIn => 1.0 / (cfg.d_mlp as f64).sqrt(),
            Param::BIn | Param::BOut => 0.0,
            _ => sd,
        }
    }
}

/// A set of [`Param`]s, e.g. the gradients a caller of the fast path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ParamSet(u16);

impl ParamSet {
    /// No tensor (a forward pass only).
    pub const NONE: ParamSet = ParamSet(0);
    /// Every tensor of a one-layer model.
    pub const ALL: ParamSet = ParamSet((1 << Param::ALL.len()) - 1);

    /// The set of the given tensors.
    pub fn of(params: &[Param]) -> ParamSet {
        params.iter().fold(ParamSet::NONE, |s, &p| s.with(p))
    }

    /// The set of the tensors with these names; the first unknown name is the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ParamSet, String> {
        let mut s = ParamSet::NONE;
        for n in names {
            s = s.with(Param::from_name(n).ok_or_else(|| n.to_string())?);
        }
        Ok(s)
    }

    /// This set and `p`.
    pub const fn with(self, p: Param) -> ParamSet {
        ParamSet(self.0 | 1 << p as u16)
    }

    /// Whether `p` is in the set.
    pub const fn contains(self, p: Param) -> bool {
        self.0 & (1 << p as u16) != 0
    }

    /// Whether any of `ps` is in the set.
    pub fn any(self, ps: &[Param]) -> bool {
        ps.iter().any(|&p| self.contains(p))
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in name order.
    pub fn iter(self) -> impl Iterator<Item = Param> {
        Param::ALL.into_iter().filter(move |&p| self.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_name_order_and_sets_round_trip() {
        let names: Vec<&str> = Param::ALL.iter().map(|p| p.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "Param::ALL must be in name order (the order of every flattening)");
        assert_eq!(Param::WQ.in_layer(2), "blocks.2.attn.W_Q");
        assert_eq!(Param::WU.in_layer(2), "unembed.W_U");
        let s = ParamSet::from_names(["unembed.W_U", "blocks.0.attn.W_O"]).unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Param::WO, Param::WU]);
        assert_eq!(ParamSet::ALL.iter().count(), 11);
        assert_eq!(ParamSet::from_names(["unembed.W_X"]), Err("unembed.W_X".to_string()));
    }
}
