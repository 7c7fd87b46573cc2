//! The pseudo-random numbers behind every random fault: xoshiro256**
//! (Blackman and Vigna), seeded through SplitMix64. Small, fast, and the
//! same on every machine, so that a seed replays a run.

/// SplitMix64: one step of Steele, Lea and Flood's generator, which also
/// serves to mix values into well-spread seeds.
pub(super) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed nobody chose: from the process's random hash keys (seeded by
/// the OS), the time and a counter.
pub(super) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u128(crate::os::unix_time().as_nanos());
    let mut state = hasher.finish();
    splitmix64(&mut state)
}

/// A xoshiro256** generator.
#[derive(Clone, Debug)]
pub(super) struct Prng {
    s: [u64; 4],
}

impl Prng {
    /// A generator whose state comes from `seed` through SplitMix64, as the
    /// authors recommend (never the all-zero state).
    pub(super) fn new(seed: u64) -> Prng {
        let mut state = seed;
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        Prng { s }
    }

    /// The generator of one stream of a network: the network's seed mixed
    /// with the stream's coordinates (a link number, a direction, and a
    /// rule of the direction: 0 unless an impairment is `otherwise`
    /// another), so that streams are independent of each other and of
    /// their order of creation.
    pub(super) fn stream(seed: u64, link: u32, direction: u8, rule: u16) -> Prng {
        let mut state = seed;
        let coordinates = u64::from(rule) << 40 | u64::from(link) << 8 | u64::from(direction);
        let mixed = splitmix64(&mut state) ^ coordinates;
        let mut state = mixed;
        Prng::new(splitmix64(&mut state))
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform float in [0, 1), from the top 53 bits.
    pub(super) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference() {
        // The first outputs of the reference implementation seeded with 0.
        let mut state = 0;
        assert_eq!(splitmix64(&mut state), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(&mut state), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(splitmix64(&mut state), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn xoshiro256starstar_matches_the_reference() {
        // Reference state 1, 2, 3, 4: the first outputs of xoshiro256**.
        let mut prng = Prng { s: [1, 2, 3, 4] };
        let first: Vec<u64> = (0..4).map(|_| prng.next_u64()).collect();
        assert_eq!(first, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |seed, link, direction, rule| {
            let mut prng = Prng::stream(seed, link, direction, rule);
            (0..8).map(|_| prng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 1, 0, 0), draw(7, 1, 0, 0));
        assert_ne!(draw(7, 1, 0, 0), draw(7, 1, 1, 0));
        assert_ne!(draw(7, 1, 0, 0), draw(7, 2, 0, 0));
        assert_ne!(draw(7, 1, 0, 0), draw(8, 1, 0, 0));
        assert_ne!(draw(7, 1, 0, 0), draw(7, 1, 0, 1));
        // Rule 0 is the stream a direction had before rules.
        let mut state = 7u64;
        let mixed = splitmix64(&mut state) ^ (1u64 << 8);
        let mut state = mixed;
        let mut old = Prng::new(splitmix64(&mut state));
        assert_eq!(
            draw(7, 1, 0, 0),
            (0..8).map(|_| old.next_u64()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn floats_are_uniform_in_the_unit_interval() {
        let mut prng = Prng::new(42);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let x = prng.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }
}
