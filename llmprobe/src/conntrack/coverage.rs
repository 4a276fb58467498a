//! Byte coverage: which bytes of each direction's current call (one syscall or SSL call, which
//! the kernel may send in several pieces, each with its offset and the call's length) have
//! arrived, so bytes the kernel could not send become counted gaps for the HTTP parser instead of
//! bytes spliced together.
//!
//! Invariants: a gap is reported once (bytes before the furthest byte seen are never missing
//! again, and a finished call is forgotten); a lost first piece is still a gap, never glued onto
//! the previous call. Pure arithmetic on two `u32`s per direction: no allocation.

use crate::probes::events::Direction;

/// Bytes of the current call seen so far on one direction.
#[derive(Debug, Default, Clone, Copy)]
struct Call {
    total: u32,
    covered: u32,
}

impl Call {
    /// Accounts for a piece; returns the bytes missing before it. A piece starts a new call when
    /// its offset is 0, its call length differs, or the current call is already complete (so a
    /// lost first piece is still a counted gap, not spliced onto the previous call).
    fn account(&mut self, offset: u32, len: u32, total: u32) -> u64 {
        let mut gap = 0u64;
        if offset == 0 || total != self.total || self.covered >= self.total {
            gap += self.take_missing();
            self.total = total;
            self.covered = 0;
        }
        if offset > self.covered {
            gap += u64::from(offset - self.covered);
        }
        self.covered = self.covered.max(offset.saturating_add(len));
        gap
    }

    /// Bytes of the current call that will never arrive (another call started, or the
    /// connection ended).
    fn take_missing(&mut self) -> u64 {
        let missing = u64::from(self.total.saturating_sub(self.covered));
        self.total = 0;
        self.covered = 0;
        missing
    }
}

/// Coverage of both directions of one connection.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Coverage([Call; 2]);

fn index(d: Direction) -> usize {
    match d {
        Direction::Egress => 0,
        Direction::Ingress => 1,
    }
}

impl Coverage {
    /// Accounts for a piece of `len` bytes at `offset` of a call that moved `total` bytes on
    /// `dir`; returns the bytes of `dir` missing before it.
    pub(super) fn account(&mut self, dir: Direction, offset: u32, len: u32, total: u32) -> u64 {
        self.0[index(dir)].account(offset, len, total)
    }

    /// Bytes of `dir`'s current call that will never arrive; forgets the call.
    pub(super) fn take_missing(&mut self, dir: Direction) -> u64 {
        self.0[index(dir)].take_missing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: Direction = Direction::Egress;
    const IN: Direction = Direction::Ingress;

    #[test]
    fn a_whole_call_at_every_split_has_no_gap() {
        for cut in 1..=10u32 {
            let mut c = Coverage::default();
            assert_eq!(c.account(OUT, 0, cut, 10), 0, "cut {cut}");
            if cut < 10 {
                assert_eq!(c.account(OUT, cut, 10 - cut, 10), 0, "cut {cut}");
            }
            assert_eq!(c.take_missing(OUT), 0, "cut {cut}");
        }
    }

    #[test]
    fn a_hole_is_one_gap_and_a_late_piece_no_second_one() {
        let mut c = Coverage::default();
        assert_eq!(c.account(OUT, 0, 4, 12), 0);
        assert_eq!(c.account(OUT, 8, 2, 12), 4);
        // The late middle piece is not a second gap.
        assert_eq!(c.account(OUT, 4, 4, 12), 0);
        assert_eq!(c.take_missing(OUT), 2);
    }

    #[test]
    fn a_truncated_tail_is_found_by_the_next_call_once() {
        let mut c = Coverage::default();
        assert_eq!(c.account(OUT, 0, 6, 10), 0);
        assert_eq!(c.account(OUT, 0, 3, 3), 4);
        assert_eq!(c.take_missing(OUT), 0);
    }

    #[test]
    fn a_lost_first_piece_is_a_gap_not_spliced_onto_the_last_call() {
        let mut c = Coverage::default();
        assert_eq!(c.account(OUT, 0, 5, 5), 0);
        // Same length as the last call, but that call is complete: a new one whose first 3
        // bytes were lost.
        assert_eq!(c.account(OUT, 3, 2, 5), 3);
        assert_eq!(c.take_missing(OUT), 0);
    }

    #[test]
    fn directions_are_independent() {
        let mut c = Coverage::default();
        assert_eq!(c.account(OUT, 0, 2, 8), 0);
        assert_eq!(c.account(IN, 0, 8, 8), 0);
        assert_eq!(c.take_missing(IN), 0);
        assert_eq!(c.take_missing(OUT), 6);
        assert_eq!(c.take_missing(OUT), 0, "a gap is reported once");
    }
}
