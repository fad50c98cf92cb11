//! Block sequences. Each is a pure function of (seed, i), so a client can
//! look ahead to prefetch, and every system of a round sees the same blocks.

/// SplitMix64: a well-mixed 64-bit hash of `x`.
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed for thread `thread` of round `round` (same for every system).
pub fn seed(round: usize, thread: usize) -> u64 {
    splitmix64(((round as u64) << 32) ^ thread as u64 ^ 0x5eed)
}

/// A uniform in [0, 1) from (seed, i).
#[inline]
fn unit(seed: u64, i: u64) -> f64 {
    (splitmix64(seed ^ splitmix64(i)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniformly random blocks of `0..n`.
#[derive(Clone, Copy, Debug)]
pub struct Uniform {
    n: u64,
    seed: u64,
}

impl Uniform {
    /// Blocks of `0..n` (n ≥ 1).
    pub fn new(n: u64, seed: u64) -> Uniform {
        Uniform { n: n.max(1), seed }
    }

    /// The i-th block.
    #[inline]
    pub fn at(&self, i: u64) -> u64 {
        splitmix64(self.seed ^ splitmix64(i)) % self.n
    }
}

/// Whether operation `i` is a write, for a `percent` share of writes.
#[inline]
pub fn is_write(seed: u64, i: u64, percent: u64) -> bool {
    splitmix64(!seed ^ splitmix64(i)) % 100 < percent
}

/// Zipfian blocks of `0..n` (YCSB's generator, Gray et al. 1994), ranks
/// scattered over the file by a fixed permutation so the hot blocks are not
/// neighbours.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    theta: f64,
    zetan: f64,
    alpha: f64,
    eta: f64,
    half_pow: f64,
    mul: u64,
    seed: u64,
}

/// ζ(n, θ) = Σ_{k=1..n} k^-θ; exact up to 10M terms, then the integral of
/// the tail (relative error far below the sampling noise).
pub fn zeta(n: u64, theta: f64) -> f64 {
    const EXACT: u64 = 10_000_000;
    let m = n.min(EXACT);
    let head: f64 = (1..=m).map(|k| (k as f64).powf(-theta)).sum();
    if n <= EXACT {
        return head;
    }
    let f = |x: f64| x.powf(1.0 - theta) / (1.0 - theta);
    head + f(n as f64 + 0.5) - f(m as f64 + 0.5)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Zipf {
    /// Blocks of `0..n` with skew `theta` (0 < θ < 1; YCSB uses 0.99).
    pub fn new(n: u64, theta: f64, seed: u64) -> Zipf {
        let n = n.max(2);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        // An odd-ish multiplier coprime to n makes rank → rank·mul mod n a bijection.
        let mut mul = (0x9e37_79b9_7f4a_7c15u64 % n).max(1);
        while gcd(mul, n) != 1 {
            mul += 1;
        }
        Zipf {
            n,
            theta,
            zetan,
            alpha: 1.0 / (1.0 - theta),
            eta,
            half_pow: 1.0 + 0.5f64.powf(theta),
            mul,
            seed,
        }
    }

    /// The same distribution drawn with another seed (ζ(n) is not recomputed).
    pub fn with_seed(&self, seed: u64) -> Zipf {
        Zipf { seed, ..self.clone() }
    }

    /// The popularity rank (0 = hottest) of the i-th draw.
    pub fn rank(&self, i: u64) -> u64 {
        let u = unit(self.seed, i);
        let uz = u * self.zetan;
        if uz < 1.0 {
            0
        } else if uz < self.half_pow {
            1
        } else {
            ((self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64).min(self.n - 1)
        }
    }

    /// The i-th block.
    #[inline]
    pub fn at(&self, i: u64) -> u64 {
        ((self.rank(i) as u128 * self.mul as u128) % self.n as u128) as u64
    }

    /// The skew.
    pub fn theta(&self) -> f64 {
        self.theta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stays_in_range_and_repeats_per_seed() {
        let u = Uniform::new(1000, 7);
        assert!((0..10_000).all(|i| u.at(i) < 1000));
        assert_eq!(u.at(42), Uniform::new(1000, 7).at(42));
        assert_ne!(
            (0..10).map(|i| u.at(i)).collect::<Vec<_>>(),
            (0..10).map(|i| Uniform::new(1000, 8).at(i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(10_000, 0.99, 1);
        let mut counts = vec![0u32; 10_000];
        for i in 0..200_000 {
            counts[z.rank(i) as usize] += 1;
            assert!(z.at(i) < 10_000);
        }
        // Rank 0 carries 1/ζ(n) ≈ 10% of draws at n = 10^4, θ = 0.99.
        let top = counts[0] as f64 / 200_000.0;
        assert!((0.07..0.14).contains(&top), "{top}");
        assert!(counts[0] > counts[10] && counts[10] > counts[1000]);
        let writes = (0..100_000).filter(|&i| is_write(3, i, 20)).count();
        assert!((18_000..22_000).contains(&writes), "{writes}");
    }

    #[test]
    fn scatter_is_a_permutation() {
        for n in [2u64, 10, 97, 4096, 1000] {
            let z = Zipf::new(n, 0.99, 0);
            let mut seen = vec![false; n as usize];
            for r in 0..n {
                let b = ((r as u128 * z.mul as u128) % n as u128) as usize;
                assert!(!seen[b]);
                seen[b] = true;
            }
        }
        let approx = zeta(20_000_000, 0.99);
        let exact: f64 = (1..=20_000_000u64).map(|k| (k as f64).powf(-0.99)).sum();
        assert!((approx - exact).abs() / exact < 1e-6);
    }
}
