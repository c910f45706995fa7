/*!
Seeded randomness. Everything random in the pipeline (splits, initial weights, minibatch order,
SGLD noise, triple samples) draws from a ChaCha8 stream derived from a config seed and a purpose
label, so that runs are reproducible to the byte and independent streams do not overlap.
candle's own `randn` is not used: its CPU generator cannot be seeded per call.
*/

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// The generator of one purpose (e.g. `"split"`, `"init"`) under one seed.
pub fn stream(seed: u64, purpose: &str) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ crate::hash::fnv1a(purpose.as_bytes()));
    rng.set_stream(crate::hash::fnv1a(purpose.as_bytes()));
    rng
}

/// `n` standard-normal draws, in order.
pub fn normals(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.sample::<f32, _>(StandardNormal)).collect()
}

/// A uniformly random permutation of `0..n` (Fisher–Yates).
pub fn permutation(rng: &mut impl Rng, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a = normals(&mut stream(1, "init"), 5);
        assert_eq!(a, normals(&mut stream(1, "init"), 5));
        assert_ne!(a, normals(&mut stream(1, "split"), 5));
        assert_ne!(a, normals(&mut stream(2, "init"), 5));
        let x = normals(&mut stream(0, "moments"), 200_000);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / x.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "{mean} {var}");
        let mut perm = permutation(&mut stream(0, "p"), 100);
        perm.sort();
        assert_eq!(perm, (0..100).collect::<Vec<_>>());
    }
}
