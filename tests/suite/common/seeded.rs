//! Seeds and engines for the randomized tests (`model`, `soak`).
//!
//! - `BLOCKCACHE_SEED=<n>` runs exactly seed `n` (the number a failing run
//!   prints), `BLOCKCACHE_SEED_BASE=<n>` starts the default range there
//!   instead of at a fresh, printed base;
//! - `BLOCKCACHE_ENGINE=sync|uring` restricts a run to one engine (e.g. to
//!   run under valgrind on the sync engine only).

use blockcache::EngineKind;

/// xorshift64*: small, seeded, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(splitmix(seed) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn byte(&mut self) -> u8 {
        (self.next() >> 32) as u8
    }
}

/// A 64-bit mix, to derive independent seeds from related ones.
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
    )
}

/// The seeds to run: `BLOCKCACHE_SEED` alone, or `count` seeds from
/// `BLOCKCACHE_SEED_BASE` (default: a fresh base, printed by the caller).
pub fn seeds(count: u64) -> (u64, Vec<u64>) {
    if let Some(one) = env_u64("BLOCKCACHE_SEED") {
        return (one, vec![one]);
    }
    let base = env_u64("BLOCKCACHE_SEED_BASE").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        splitmix(t.as_nanos() as u64 ^ u64::from(std::process::id())) >> 16
    });
    (base, (base..base + count).collect())
}

/// A count from the environment, or `default`.
pub fn count(name: &str, default: u64) -> u64 {
    env_u64(name).unwrap_or(default)
}

/// `engines()`, restricted by `BLOCKCACHE_ENGINE` if set.
pub fn engines() -> Vec<EngineKind> {
    let all = super::engines();
    match std::env::var("BLOCKCACHE_ENGINE").ok().as_deref() {
        None | Some("") | Some("all") => all,
        Some("sync") => vec![EngineKind::Sync],
        Some("uring") => all.into_iter().filter(|k| *k == EngineKind::Uring).collect(),
        Some(other) => panic!("BLOCKCACHE_ENGINE={other}: want sync, uring or all"),
    }
}
