//! A bounded fuzz pass over every reader of outside input: the YAML config, safetensors
//! checkpoints and parquet tables. Valid files are mutated at random (bit flips, truncation,
//! spliced garbage, repeated chunks) with a seeded generator; every reader must return `Ok` or a
//! clean `Err`, never panic, abort or hang. `PIZZA_FUZZ_ITERS` sets the inputs per reader
//! (default 300; `make fuzz` runs 20,000).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pizza_core::{ckpt, config, data::Dataset};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn iters() -> usize {
    std::env::var("PIZZA_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(300)
}

fn mutate(rng: &mut ChaCha8Rng, src: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..5) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !v.is_empty() => {
                let n = rng.random_range(0..v.len());
                v.truncate(n);
            }
            2 => {
                let i = rng.random_range(0..=v.len());
                let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                v.splice(i..i, junk);
            }
            3 if v.len() > 8 => {
                let a = rng.random_range(0..v.len() - 4);
                let b = (a + rng.random_range(1..64)).min(v.len());
                let chunk = v[a..b].to_vec();
                let i = rng.random_range(0..=v.len());
                v.splice(i..i, chunk);
            }
            _ if !v.is_empty() => {
                // Overwrite a byte with an "interesting" value.
                let i = rng.random_range(0..v.len());
                v[i] = [0u8, 0xff, 0x7f, 0x80, b'{', b'"', b':', b'9'][rng.random_range(0..8)];
            }
            _ => {}
        }
    }
    v
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn fuzz_config_reader() {
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines/default.yaml")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..iters() {
        let bytes = mutate(&mut rng, seed.as_bytes());
        let text = String::from_utf8_lossy(&bytes);
        match std::panic::catch_unwind(|| config::load_str(&text, &[]).and_then(|c| c.runs().map(|_| ()))) {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => err += 1,
            Err(_) => panic!("config reader panicked on:\n{text}"),
        }
    }
    eprintln!("fuzz config: {} inputs, {ok} accepted, {err} rejected", ok + err);
}

/// Feeds `read` mutants of the file `good` (written to `mutant.<ext>`, seeded with `seed`): each
/// must be read or refused with an error naming the file, never a panic.
fn fuzz_file<T>(what: &str, good: &std::path::Path, seed: u64, read: impl Fn(&std::path::Path) -> anyhow::Result<T> + std::panic::RefUnwindSafe) {
    let original = std::fs::read(good).unwrap();
    let name = format!("mutant.{}", good.extension().unwrap().to_string_lossy());
    let path = tmp(&name);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..iters() {
        std::fs::write(&path, mutate(&mut rng, &original)).unwrap();
        match std::panic::catch_unwind(|| read(&path)) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                assert!(format!("{e:#}").contains(&name), "error does not name the file: {e:#}");
                err += 1
            }
            Err(_) => panic!("{what} reader panicked; input kept at {}", path.display()),
        }
    }
    eprintln!("fuzz {what}: {} inputs, {ok} accepted, {err} rejected", ok + err);
}

#[test]
fn fuzz_checkpoint_reader() {
    let cfg = config::load_str("data: {p: 7}\nmodel: {d_model: 8, n_heads: 2}", &[]).unwrap();
    let params = pizza_core::model::Params::init(&cfg.model_config(), 0, &candle_core::Device::Cpu).unwrap();
    let good = tmp("good.safetensors");
    let meta = BTreeMap::from([("pizza_config".to_string(), cfg.to_json().unwrap()), ("step".to_string(), "3".to_string())]);
    ckpt::save(&good, &params, &cfg.model_config(), &meta).unwrap();
    fuzz_file("safetensors", &good, 2, |path| ckpt::load(path).and_then(|c| c.transformer().map(|_| ())));
}

#[test]
fn fuzz_parquet_reader() {
    let cfg = config::load_str("data: {p: 5}", &[]).unwrap();
    let good = tmp("good.parquet");
    Dataset::generate(&cfg.data).write(&good, &BTreeMap::new()).unwrap();
    fuzz_file("parquet", &good, 3, |path| Dataset::read_checked(path, &cfg.data));
}
