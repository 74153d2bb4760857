//! This replica's own usage of one tenant, exactly: how much it admitted in the last minute and the last
//! hour, as sliding windows that never reset on the clock (a limit of 600 a minute never lets 1,200
//! through around a minute boundary).
//!
//! The minute is 60 one-second buckets and the hour 60 one-minute buckets; each keeps a running total,
//! so adding and reading are O(1) amortised (buckets that fell out of the window are subtracted as the
//! clock passes them). Time is passed in, in seconds, so tests run on any clock.

/// A ring of `N` buckets of `width` seconds with a running total.
#[derive(Debug, Clone)]
struct Ring<const N: usize> {
    width: u64,
    /// Counts per bucket.
    buckets: [u64; N],
    /// The bucket number (time / width) the newest bucket holds.
    newest: u64,
    total: u64,
}

impl<const N: usize> Ring<N> {
    fn new(width: u64) -> Self {
        Ring {
            width,
            buckets: [0; N],
            newest: 0,
            total: 0,
        }
    }

    /// Moves the ring to `now`, dropping buckets that left the window.
    fn advance(&mut self, now: u64) {
        let bucket = now / self.width;
        if bucket <= self.newest {
            return;
        }
        let gap = bucket - self.newest;
        if gap >= N as u64 {
            self.buckets = [0; N];
            self.total = 0;
        } else {
            for b in self.newest + 1..=bucket {
                let slot = (b % N as u64) as usize;
                self.total -= self.buckets[slot];
                self.buckets[slot] = 0;
            }
        }
        self.newest = bucket;
    }

    fn add(&mut self, now: u64, n: u64) {
        self.advance(now);
        let slot = ((now / self.width) % N as u64) as usize;
        self.buckets[slot] += n;
        self.total += n;
    }

    fn sum(&mut self, now: u64) -> u64 {
        self.advance(now);
        self.total
    }

    /// Seconds from `now` until at least `excess` has left the window (oldest buckets first); the
    /// window's length when the window holds less than that.
    fn seconds_until_freed(&mut self, now: u64, excess: u64) -> u64 {
        self.advance(now);
        let mut freed = 0;
        let current = now / self.width;
        for age in (0..N as u64).rev() {
            let Some(b) = current.checked_sub(age) else {
                continue;
            };
            freed += self.buckets[(b % N as u64) as usize];
            if freed >= excess {
                // Bucket `b` leaves the window when the clock reaches bucket b + N.
                return ((b + N as u64) * self.width).saturating_sub(now).max(1);
            }
        }
        N as u64 * self.width
    }
}

/// One tenant's count of one thing over the last minute and hour.
#[derive(Debug, Clone)]
pub struct Window {
    minute: Ring<60>,
    hour: Ring<60>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            minute: Ring::new(1),
            hour: Ring::new(60),
        }
    }
}

impl Window {
    /// Counts `n` at `now` (seconds).
    pub fn add(&mut self, now: u64, n: u64) {
        self.minute.add(now, n);
        self.hour.add(now, n);
    }

    /// The count of the last minute.
    pub fn minute(&mut self, now: u64) -> u64 {
        self.minute.sum(now)
    }

    /// The count of the last hour (to the minute: the oldest minute of the hour is whole).
    pub fn hour(&mut self, now: u64) -> u64 {
        self.hour.sum(now)
    }

    /// Seconds until `excess` of the minute's (or hour's) count has left its window.
    pub fn seconds_until_freed(&mut self, now: u64, hour: bool, excess: u64) -> u64 {
        if hour {
            self.hour.seconds_until_freed(now, excess)
        } else {
            self.minute.seconds_until_freed(now, excess)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_slides_second_by_second() {
        let mut w = Window::default();
        for s in 1000..1060 {
            w.add(s, 10);
        }
        assert_eq!(w.minute(1059), 600);
        assert_eq!(w.minute(1060), 590, "the first second left");
        assert_eq!(w.minute(1089), 300);
        assert_eq!(w.minute(1200), 0);
        assert_eq!(w.hour(1200), 600);
        assert_eq!(w.hour(1000 + 3600 + 60), 0);
    }

    #[test]
    fn no_doubling_at_the_edge_of_a_minute() {
        let mut w = Window::default();
        w.add(59, 600);
        w.add(60, 600);
        assert_eq!(w.minute(60), 1200, "both are inside the last minute");
        assert_eq!(w.minute(119), 600);
    }

    #[test]
    fn time_to_free_room() {
        let mut w = Window::default();
        w.add(100, 5);
        w.add(130, 5);
        assert_eq!(
            w.seconds_until_freed(140, false, 3),
            20,
            "100's bucket leaves at 160"
        );
        assert_eq!(
            w.seconds_until_freed(140, false, 8),
            50,
            "130's leaves at 190"
        );
        assert_eq!(w.seconds_until_freed(140, false, 50), 60);
        // Time going backwards (a clock step) changes nothing.
        assert_eq!(w.minute(10), 10);
    }
}
