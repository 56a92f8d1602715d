//! Keys and values of a benchmark run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Picks keys from `0..space`, rendered as zero-padded decimals after a
/// prefix so that every key is exactly `size` bytes. Clones share the
/// sequence of `--sequential-keys`, so that clients together visit each key
/// in turn, as one producer would.
#[derive(Clone)]
pub struct KeyGen {
    prefix: Vec<u8>,
    size: usize,
    space: u64,
    sequential: bool,
    next: Arc<AtomicU64>,
    rng: SmallRng,
}

impl KeyGen {
    pub fn new(prefix: &[u8], size: usize, space: u64, sequential: bool) -> anyhow::Result<KeyGen> {
        let digits = space.saturating_sub(1).max(1).ilog10() as usize + 1;
        if size < prefix.len() + digits {
            anyhow::bail!(
                "--key-size {size} is too small for {space} distinct keys after the prefix {:?}; use at least {}",
                String::from_utf8_lossy(prefix),
                prefix.len() + digits
            );
        }
        Ok(KeyGen {
            prefix: prefix.to_vec(),
            size,
            space,
            sequential,
            next: Arc::new(AtomicU64::new(0)),
            rng: SmallRng::seed_from_u64(0),
        })
    }

    /// A generator for one client; `seed` differs per client so that random
    /// picks do not walk in lockstep.
    pub fn for_client(&self, seed: u64) -> KeyGen {
        KeyGen {
            rng: SmallRng::seed_from_u64(seed),
            ..self.clone()
        }
    }

    pub fn key(&self, n: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.size);
        key.extend_from_slice(&self.prefix);
        let width = self.size - self.prefix.len();
        key.extend_from_slice(format!("{n:0width$}").as_bytes());
        key
    }

    pub fn next_key(&mut self) -> Vec<u8> {
        let n = if self.sequential {
            self.next.fetch_add(1, Ordering::Relaxed) % self.space
        } else {
            self.rng.random_range(0..self.space)
        };
        self.key(n)
    }

    /// A uniform draw in [0, 1), for choosing between operations.
    pub fn coin(&mut self) -> f64 {
        self.rng.random::<f64>()
    }
}

/// A fixed value of `size` random printable bytes.
pub fn value(size: usize, seed: u64) -> Vec<u8> {
    ValueGen::new(size, seed).fresh()
}

/// Values of random printable bytes, a new one for every request, so that
/// block compression gains nothing from repeated values and flatters
/// neither server's disk or cache figures.
pub struct ValueGen {
    size: usize,
    rng: SmallRng,
}

impl ValueGen {
    pub fn new(size: usize, seed: u64) -> ValueGen {
        ValueGen {
            size,
            rng: SmallRng::seed_from_u64(seed ^ 0x5eed),
        }
    }

    pub fn fresh(&mut self) -> Vec<u8> {
        (0..self.size).map(|_| self.rng.random_range(b'a'..=b'z')).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_requested_size_and_stay_in_space() {
        let mut g = KeyGen::new(b"k/", 10, 1000, false).unwrap().for_client(7);
        for _ in 0..100 {
            let k = g.next_key();
            assert_eq!(k.len(), 10);
            let n: u64 = std::str::from_utf8(&k[2..]).unwrap().parse().unwrap();
            assert!(n < 1000);
        }
        assert_eq!(g.key(42), b"k/00000042".to_vec());
    }

    #[test]
    fn sequential_keys_are_shared_by_clients_and_wrap() {
        let shared = KeyGen::new(b"", 1, 3, true).unwrap();
        let (mut a, mut b) = (shared.for_client(1), shared.for_client(2));
        let seen = vec![a.next_key(), b.next_key(), a.next_key(), b.next_key()];
        assert_eq!(seen, vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec(), b"0".to_vec()]);
    }

    #[test]
    fn too_small_keys_are_refused() {
        assert!(KeyGen::new(b"pre/", 5, 1000, false).is_err());
    }
}
