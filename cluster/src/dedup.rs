//! The replicated window of applied request ids, one per origin node.
//!
//! It lives in the engine's applied marker, so it is written in the same atomic batch as
//! the effects it guards and every replica decides the same way. Per origin it keeps the
//! newest incarnation and a bitmap of the [`WINDOW`] sequence numbers above `floor`. The
//! floor slides over applied sequences as they complete, so a sequence at or below it
//! was applied ([`Verdict::Duplicate`]), as is a set bit; only when a sequence far ahead
//! forces the window to jump are unapplied ones closed: those up to `expired_below` are
//! answered [`Verdict::Expired`] (not applied now; an earlier attempt may have been). A node has far fewer writes in flight
//! than the window holds, so only a write stuck in retries for thousands of newer ones
//! can expire, and then it is refused rather than applied twice.

use crate::types::{NodeId, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sequence numbers remembered per origin above its floor.
pub const WINDOW: u64 = 4096;
const WORDS: usize = (WINDOW / 64) as usize;

/// What to do with a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    Duplicate,
    Expired,
}

/// One origin's window. Persisted in the marker: append-only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginWindow {
    pub incarnation: u64,
    /// Every sequence at or below is closed (applied, or given up).
    pub floor: u64,
    /// Sequences at or below were closed by a jump: whether they applied is not known.
    pub expired_below: u64,
    /// Bit `i` set: sequence `floor + 1 + i` was applied.
    pub bits: Vec<u64>,
}

impl OriginWindow {
    fn new(incarnation: u64) -> OriginWindow {
        OriginWindow {
            incarnation,
            floor: 0,
            expired_below: 0,
            bits: vec![0; WORDS],
        }
    }

    fn bit(&self, seq: u64) -> bool {
        let i = (seq - self.floor - 1) as usize;
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, seq: u64) {
        let i = (seq - self.floor - 1) as usize;
        if let Some(w) = self.bits.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    /// Moves the floor up by `n`, shifting the bitmap (bits below the new floor drop).
    fn shift(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        if n >= WINDOW {
            self.bits.iter_mut().for_each(|w| *w = 0);
        } else {
            let (words, bits) = ((n / 64) as usize, (n % 64) as u32);
            // Reads run ahead of writes, so shifting in place is safe.
            for i in 0..WORDS {
                let lo = self.bits.get(i + words).copied().unwrap_or(0);
                let hi = self.bits.get(i + words + 1).copied().unwrap_or(0);
                self.bits[i] = if bits == 0 {
                    lo
                } else {
                    (lo >> bits) | (hi << (64 - bits))
                };
            }
        }
        self.floor += n;
    }

    /// Closes the run of applied sequences just above the floor, so the window keeps
    /// room ahead. Bounded: each step moves the floor by at least one applied bit.
    fn slide(&mut self) {
        loop {
            let run = u64::from((!self.bits[0]).trailing_zeros());
            if run == 0 {
                break;
            }
            self.shift(run);
        }
    }
}

/// Every origin's window. Persisted in the marker: append-only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupTable {
    pub origins: BTreeMap<NodeId, OriginWindow>,
}

impl DedupTable {
    /// Decides for `id` and records it when it is to be applied.
    pub fn admit(&mut self, id: RequestId) -> Verdict {
        if id.seq == 0 {
            return Verdict::Expired; // sequences start at 1
        }
        let w = self
            .origins
            .entry(id.node)
            .or_insert_with(|| OriginWindow::new(id.incarnation));
        if id.incarnation < w.incarnation {
            // That process is gone; its writes were answered or failed long ago.
            return Verdict::Expired;
        }
        if id.incarnation > w.incarnation {
            *w = OriginWindow::new(id.incarnation);
        }
        if id.seq <= w.expired_below {
            return Verdict::Expired;
        }
        if id.seq <= w.floor {
            return Verdict::Duplicate; // the floor only slides over applied sequences
        }
        if id.seq > w.floor + WINDOW {
            // Far ahead: what falls below the new floor is closed unknown.
            w.shift(id.seq - w.floor - WINDOW);
            w.expired_below = w.floor;
        }
        if w.bit(id.seq) {
            return Verdict::Duplicate;
        }
        w.set(id.seq);
        w.slide();
        Verdict::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> RequestId {
        RequestId {
            node: 1,
            incarnation: 1,
            seq,
        }
    }

    #[test]
    fn retries_are_duplicates_in_any_order() {
        let mut t = DedupTable::default();
        for s in [3, 1, 2, 10, 5] {
            assert_eq!(t.admit(id(s)), Verdict::Apply, "seq {s}");
        }
        for s in [3, 1, 2, 10, 5] {
            assert_eq!(t.admit(id(s)), Verdict::Duplicate, "seq {s}");
        }
        // 1..3 applied contiguously: the floor moved past them; still duplicates.
        assert_eq!(t.origins[&1].floor, 3);
        assert_eq!(t.admit(id(4)), Verdict::Apply);
        assert_eq!(t.origins[&1].floor, 5);
        assert_eq!(t.admit(id(4)), Verdict::Duplicate);
        assert_eq!(t.admit(id(1)), Verdict::Duplicate);
    }

    #[test]
    fn window_slides_and_old_ids_expire() {
        let mut t = DedupTable::default();
        assert_eq!(t.admit(id(2)), Verdict::Apply); // 1 stays open
        for s in 3..=WINDOW + 10 {
            assert_eq!(t.admit(id(s)), Verdict::Apply, "seq {s}");
        }
        // 1 fell out of the window unapplied: refused, never applied late or twice.
        assert_eq!(t.admit(id(1)), Verdict::Expired);
        assert_eq!(
            t.admit(id(3)),
            Verdict::Duplicate,
            "applied before the jump"
        );
        assert_eq!(t.admit(id(WINDOW + 10)), Verdict::Duplicate);
        assert_eq!(t.admit(id(WINDOW + 200)), Verdict::Apply);
        assert_eq!(t.admit(id(WINDOW + 11)), Verdict::Apply);
        assert_eq!(t.admit(id(WINDOW + 11)), Verdict::Duplicate);
        // A jump far ahead keeps exactness for what is inside the new window.
        assert_eq!(t.admit(id(10 * WINDOW)), Verdict::Apply);
        assert_eq!(t.admit(id(10 * WINDOW)), Verdict::Duplicate);
        assert_eq!(t.admit(id(WINDOW + 200)), Verdict::Expired);
        assert_eq!(t.admit(id(9 * WINDOW + 1)), Verdict::Apply);
    }

    #[test]
    fn new_incarnation_resets_and_old_one_expires() {
        let mut t = DedupTable::default();
        assert_eq!(t.admit(id(1)), Verdict::Apply);
        let newer = RequestId {
            incarnation: 2,
            ..id(1)
        };
        assert_eq!(t.admit(newer), Verdict::Apply);
        assert_eq!(t.admit(newer), Verdict::Duplicate);
        assert_eq!(t.admit(id(7)), Verdict::Expired);
    }

    #[test]
    fn matches_a_naive_set_under_random_order() {
        // A naive model: applied set; anything applied answers Duplicate or Expired,
        // nothing is applied twice, and in-window fresh ids apply.
        let mut t = DedupTable::default();
        let mut applied = std::collections::HashSet::new();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut top = 0u64;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = 1 + (top + (x % 64)).saturating_sub(32);
            top = top.max(seq);
            match t.admit(id(seq)) {
                Verdict::Apply => assert!(applied.insert(seq), "seq {seq} applied twice"),
                Verdict::Duplicate => assert!(applied.contains(&seq)),
                // Ids here stay within the window of the newest: nothing expires.
                Verdict::Expired => panic!("seq {seq} refused within the window"),
            }
        }
    }
}
