//! The operations a worker issues, how a scenario blends them, and the
//! small deterministic random source the workers draw from.

use serde::Serialize;

/// One kind of call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// `grpc.health.v1.Health/Check`.
    Health,
    /// `GetToDo` of a seeded entry.
    Get,
    /// `GetToDo` of a seeded entry by the one user hammering in
    /// `fair-share`: RESOURCE_EXHAUSTED (its fair share) is expected.
    HammerGet,
    /// `GetToDo` of an id that does not exist: NOT_FOUND is expected.
    GetMissing,
    /// `ListToDo`, first page.
    List,
    Create,
    /// `CreateToDo` with a fresh request id, as a client that retries
    /// safely sends it (the service's idempotent path).
    CreateOnce,
    Update,
    /// `DeleteToDo` of an entry this worker created (a create when it has none).
    Delete,
    Login,
    /// `Register` of a fresh user.
    Register,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Health => "health",
            Op::Get => "get",
            Op::HammerGet => "get-hammer",
            Op::GetMissing => "get-missing",
            Op::List => "list",
            Op::Create => "create",
            Op::CreateOnce => "create-once",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Login => "login",
            Op::Register => "register",
        }
    }
}

/// The `mixed` scenario, in calls per thousand: a read-heavy todo client
/// session (lists and opens entries, edits some, adds and removes a few)
/// with the rare login of a returning user. Tokens live an hour, so logins
/// are a small share of the calls.
pub const MIXED: [(Op, u32); 6] = [
    (Op::List, 350),
    (Op::Get, 300),
    (Op::Update, 150),
    (Op::Create, 120),
    (Op::Delete, 79),
    (Op::Login, 1),
];

/// A weighted choice: `r` in `0..total weight` picks the op whose band
/// contains it. Empty or all-zero weights pick nothing.
pub fn pick(weights: &[(Op, u32)], r: u32) -> Option<Op> {
    let mut upper = 0u32;
    for &(op, weight) in weights {
        upper = upper.saturating_add(weight);
        if r < upper {
            return Some(op);
        }
    }
    None
}

pub fn total_weight(weights: &[(Op, u32)]) -> u32 {
    weights
        .iter()
        .fold(0u32, |sum, (_, w)| sum.saturating_add(*w))
}

/// splitmix64: fast, tiny, good enough to spread load; seeded per worker so
/// a run's op sequence is reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift: no modulo bias worth speaking of at these sizes.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// The next op of a weighted mix.
    pub fn pick(&mut self, weights: &[(Op, u32)]) -> Option<Op> {
        let total = total_weight(weights);
        if total == 0 {
            return None;
        }
        pick(weights, self.below(total as usize) as u32)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn mixed_sums_to_a_thousand() {
        assert_eq!(total_weight(&MIXED), 1000);
    }

    #[test]
    fn pick_uses_half_open_bands() {
        let w = [(Op::Get, 2), (Op::List, 0), (Op::Create, 3)];
        assert_eq!(pick(&w, 0), Some(Op::Get));
        assert_eq!(pick(&w, 1), Some(Op::Get));
        assert_eq!(pick(&w, 2), Some(Op::Create));
        assert_eq!(pick(&w, 4), Some(Op::Create));
        assert_eq!(pick(&w, 5), None);
        assert_eq!(pick(&[], 0), None);
        assert_eq!(Rng::new(1).pick(&[(Op::Get, 0)]), None);
    }

    #[test]
    fn the_mixed_blend_comes_out_in_its_proportions() {
        let mut rng = Rng::new(42);
        let n = 200_000u32;
        let mut seen: BTreeMap<Op, u32> = BTreeMap::new();
        for _ in 0..n {
            let op = rng.pick(&MIXED).expect("non-empty mix");
            *seen.entry(op).or_default() += 1;
        }
        for (op, weight) in MIXED {
            let expected = f64::from(n) * f64::from(weight) / 1000.0;
            let got = f64::from(seen.get(&op).copied().unwrap_or(0));
            // Within 4 standard deviations of the binomial count (and ≥ 1 call's slack).
            let p = f64::from(weight) / 1000.0;
            let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
            assert!(
                (got - expected).abs() <= 4.0 * sd + 1.0,
                "{op:?}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn rng_is_deterministic_per_seed_and_below_is_in_range() {
        let a: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..5)
            .scan(Rng::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut rng = Rng::new(3);
        let mut hits = [0u32; 7];
        for _ in 0..70_000 {
            hits[rng.below(7)] += 1;
        }
        assert!(
            hits.iter().all(|&h| (9_000..11_000).contains(&h)),
            "{hits:?}"
        );
        assert_eq!(rng.below(0), 0);
    }
}
