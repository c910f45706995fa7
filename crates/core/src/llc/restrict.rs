/*!
The weight-restricted LLC (devinterp 2.x's weight restrictions; Wang et al. 2024's
weight-refined LLC): SGLD moves only the tensors of one group, every other tensor stays at `w*`,
and the estimate is `nβ·(E[L] − L(w*))` as for the whole model. This module is the one place that
knows what a group is: its YAML form (`llc.restrict`), the presets, the glob syntax, which tensors
a group frees, and the name its rows carry in the tables (`restriction`).

A group is a preset name ([`PRESETS`]) or a list of tensor names and globs, where `*` matches any
run of characters (dots included) and `?` one character. A bare string that is not a preset but
looks like a tensor pattern (it holds `.`, `*` or `?`) is a group of that one pattern; a group of
several tensors is a nested list (`restrict: [all, [blocks.0.attn.W_Q, "blocks.0.mlp.*"]]`).
Every pattern of a group must match some tensor of the checkpoint, so a typo is an error, not a
silently smaller group.

The estimator and the sampler know nothing of this: they sample exactly `target.params()`, and a
restricted target ([`crate::llc::transformer::TransformerTarget::restrict`],
[`crate::llc::analytic::AnalyticProblem::restricted_target`]) exposes only the group's `Var`s
there while its loss reads every weight. The sampled dimension `d` (the tables' `n_params`, the
divergence threshold's `d/(2nβ)`) is therefore the group's.
*/

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The presets over the transformer's tensor names (the released checkpoints', see
/// `ModelConfig::param_specs`): name, patterns, what it is.
pub const PRESETS: &[(&str, &[&str], &str)] = &[
    ("all", &["*"], "every tensor: the whole-model LLC"),
    ("embed", &["embed.W_E", "pos_embed.W_pos"], "token and position embeddings"),
    ("attn", &["blocks.*.attn.W_Q", "blocks.*.attn.W_K", "blocks.*.attn.W_V", "blocks.*.attn.W_O"], "attention, every layer"),
    ("mlp", &["blocks.*.mlp.W_in", "blocks.*.mlp.b_in", "blocks.*.mlp.W_out", "blocks.*.mlp.b_out"], "MLP weights and biases, every layer"),
    ("unembed", &["unembed.W_U"], "unembedding"),
];

/// The presets as a markdown table (docs/llc.md holds it verbatim; a test keeps them in step).
pub fn presets_markdown() -> String {
    let mut s = String::from("| preset | tensors | what |\n|---|---|---|\n");
    for (name, patterns, what) in PRESETS {
        let p: Vec<String> = patterns.iter().map(|p| format!("`{p}`")).collect();
        s.push_str(&format!("| `{name}` | {} | {what} |\n", p.join(", ")));
    }
    s
}

/// One group of `llc.restrict`: the tensors SGLD moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// The preset's name, or `None` for a list of tensor names and globs.
    preset: Option<&'static str>,
    /// Tensor names and globs.
    patterns: Vec<String>,
}

impl Default for Restriction {
    fn default() -> Self {
        Restriction::all()
    }
}

impl Restriction {
    /// Every tensor: the whole-model LLC.
    pub fn all() -> Restriction {
        Restriction::preset("all").expect("`all` is a preset")
    }

    /// A preset by name.
    pub fn preset(name: &str) -> Option<Restriction> {
        PRESETS.iter().find(|(n, _, _)| *n == name).map(|(n, patterns, _)| Restriction {
            preset: Some(n),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
        })
    }

    /// A group of tensor names and globs, checked (see [`check_pattern`]). Errors from here and
    /// [`Restriction::parse`] name the value; loading prefixes them with the key
    /// (`llc.restrict[1]: …`).
    pub fn tensors<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Result<Restriction, String> {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        if patterns.is_empty() {
            return Err("a group is an empty list; name at least one tensor or glob, or a preset".into());
        }
        for p in &patterns {
            check_pattern(p)?;
        }
        Ok(Restriction { preset: None, patterns })
    }

    /// A group as written as a single string: a preset name, or one tensor name or glob.
    pub fn parse(s: &str) -> Result<Restriction, String> {
        if let Some(r) = Restriction::preset(s) {
            return Ok(r);
        }
        if s.contains(['.', '*', '?']) {
            return Restriction::tensors([s]);
        }
        let names: Vec<&str> = PRESETS.iter().map(|(n, _, _)| *n).collect();
        Err(format!(
            "unknown preset `{s}` (presets: {}; or a list of tensor names or globs such as [blocks.0.attn.W_Q, \"blocks.0.mlp.*\"])",
            names.join(", ")
        ))
    }

    /// The name its rows carry in the `restriction` column: the preset's name, or the patterns
    /// as written, joined by `+`.
    pub fn name(&self) -> String {
        match self.preset {
            Some(n) => n.to_string(),
            None => self.patterns.join("+"),
        }
    }

    /// Whether this is the whole model (the preset `all`).
    pub fn is_all(&self) -> bool {
        self.preset == Some("all")
    }

    /// The tensor names and globs.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether the group frees the tensor `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| glob_match(p, name))
    }

    /// The names among `names` (kept in their order) that the group frees. Every pattern must
    /// match at least one of them; the error names the group, the pattern and the tensors there
    /// are.
    pub fn select<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<Vec<&'a str>, String> {
        let names: Vec<&str> = names.into_iter().collect();
        if let Some(p) = self.patterns.iter().find(|p| !names.iter().any(|n| glob_match(p, n))) {
            let which = if self.patterns.len() == 1 { String::new() } else { format!(" (its pattern `{p}`)") };
            return Err(format!(
                "llc.restrict: the group `{}`{which} matches no tensor; the tensors are {}",
                self.name(),
                names.join(", ")
            ));
        }
        Ok(names.into_iter().filter(|n| self.matches(n)).collect())
    }
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Checks `llc.restrict` as a whole: at least one group, and no two groups with the same name
/// (rows are keyed by it).
pub fn check_groups(groups: &[Restriction]) -> Result<(), String> {
    if groups.is_empty() {
        return Err("llc.restrict is an empty list; name at least one group (the default is [all])".into());
    }
    for (i, g) in groups.iter().enumerate() {
        if groups[..i].iter().any(|h| h.name() == g.name()) {
            return Err(format!("llc.restrict lists the group `{}` twice", g.name()));
        }
    }
    Ok(())
}

/// A tensor name or glob: letters, digits, `_`, `.`, and the wildcards `*` and `?`.
pub fn check_pattern(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("an empty tensor name".into());
    }
    if let Some(c) = p.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '*' | '?'))) {
        return Err(format!(
            "`{p}` holds `{c}`; a tensor pattern holds letters, digits, `_`, `.` and the wildcards `*` (any run of characters) and `?` (one character)"
        ));
    }
    Ok(())
}

/// Whether `name` matches the glob `pattern`: `*` any run of characters (dots included), `?`
/// exactly one, everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and the position in `name` it currently stands for the end of.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            // Let that `*` swallow one more character and retry.
            star = Some((sp, sn + 1));
            pi = sp + 1;
            ni = sn + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl Serialize for Restriction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.preset {
            Some(name) => s.serialize_str(name),
            None => self.patterns.serialize(s),
        }
    }
}

const EXPECTING: &str = "a preset name (all, embed, attn, mlp, unembed), a tensor name or glob, or a list of tensor names or globs";

impl<'de> Deserialize<'de> for Restriction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Restriction;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Restriction, E> {
                Restriction::parse(s).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Restriction, A::Error> {
                let mut patterns: Vec<String> = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    patterns.push(p);
                }
                Restriction::tensors(patterns).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `llc.restrict`: a list of groups, or one group written alone (`restrict: attn`, handy with
/// `--set llc.restrict=attn`).
pub fn deserialize_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Restriction>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<Restriction>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of groups, each {EXPECTING}")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<Restriction>, E> {
            Restriction::parse(s).map(|r| vec![r]).map_err(E::custom)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Restriction>, A::Error> {
            let mut groups = Vec::new();
            while let Some(g) = seq.next_element::<Restriction>()? {
                groups.push(g);
            }
            Ok(groups)
        }
    }
    d.deserialize_any(V)
}

/// Whether `restrict` is the default `[all]` (then it is left out of serialized settings, so
/// that the settings of today's estimates serialize, and hash, as they always did).
pub fn is_default_groups(groups: &[Restriction]) -> bool {
    groups.len() == 1 && groups[0].is_all()
}

/// The default of `llc.restrict`: `[all]`.
pub fn default_groups() -> Vec<Restriction> {
    vec![Restriction::all()]
}
