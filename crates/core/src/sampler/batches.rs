/*!
The minibatch schedule of one chain: sampling without replacement, reshuffled every epoch.
*/

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Yields the training rows of successive minibatches for one chain.
///
/// Each epoch is a fresh seeded permutation of `0..n` cut into consecutive batches of
/// `batch_size` rows; when `batch_size` does not divide `n` the last batch of an epoch is smaller
/// (PyTorch's `DataLoader(shuffle=True)` without `drop_last`, which devinterp uses), so every row
/// is seen exactly once per epoch. With `batch_size == n` (full batch) the rows are never shuffled:
/// the mean loss does not depend on their order, and skipping the shuffle makes full-batch results
/// independent of the batch stream.
#[derive(Debug, Clone)]
pub struct Minibatches {
    order: Vec<u32>,
    pos: usize,
    batch_size: usize,
    rng: ChaCha8Rng,
}

impl Minibatches {
    /// A schedule over `n` rows with batches of `batch_size` rows (clamped to `1..=n`), drawing its
    /// permutations from ChaCha8 stream `stream` of `seed`.
    pub fn new(n: usize, batch_size: usize, seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        let order: Vec<u32> = (0..n as u32).collect();
        let batch_size = batch_size.clamp(1, n.max(1));
        let mut batches = Minibatches {
            order,
            pos: 0,
            batch_size,
            rng,
        };
        batches.start_epoch();
        batches
    }

    /// Number of batches in one epoch (the last one possibly smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// The rows of the next minibatch.
    pub fn next_batch(&mut self) -> &[u32] {
        if self.pos >= self.order.len() {
            self.start_epoch();
        }
        let start = self.pos;
        let end = (start + self.batch_size).min(self.order.len());
        self.pos = end;
        &self.order[start..end]
    }

    fn start_epoch(&mut self) {
        self.pos = 0;
        if self.batch_size < self.order.len() {
            self.order.shuffle(&mut self.rng);
        }
    }
}
