//! Randomness, read here and passed into decisions as samples (like the clock's time): restart
//! jitter and instance ids in the runtime, the admin client's retry jitter. No decision draws
//! its own.

/// Random samples in `[0, 1)` and random words (xorshift64*: statistical quality is all they
/// need).
pub struct Jitter {
    state: u64,
}

impl Jitter {
    pub fn seeded(seed: u64) -> Jitter {
        Jitter { state: seed | 1 }
    }

    pub fn sample(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly, so the result is in [0, 1).
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A seed that differs between hosts and runs: from the kernel's random source, else the time
/// and the pid. Launchers of a fleet started at once (in containers, each as pid 1) must not
/// draw the same jitter, or they would retry in lockstep after all.
pub fn entropy_seed(now_millis: u64) -> u64 {
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes));
    match random {
        Ok(()) => u64::from_ne_bytes(bytes),
        Err(_) => now_millis ^ (u64::from(std::process::id()) << 32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_in_the_unit_interval_and_seeds_differ() {
        let mut jitter = Jitter::seeded(42);
        for _ in 0..10_000 {
            let sample = jitter.sample();
            assert!((0.0..1.0).contains(&sample), "{sample}");
        }
        assert_ne!(
            entropy_seed(1),
            entropy_seed(1),
            "the kernel's random source"
        );
    }
}
