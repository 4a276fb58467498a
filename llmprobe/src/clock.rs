//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock time, and RFC 3339.

/// Converts CLOCK_MONOTONIC nanoseconds to Unix nanoseconds with one offset taken at start
/// (or stored in a capture, so a replay reproduces the original times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, nanoseconds.
    pub offset_ns: i64,
}

fn now_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime has no other preconditions.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, in nanoseconds (the kernel programs' clock).
pub fn monotonic_now_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC).max(0) as u64
}

impl Clock {
    /// Measures the offset now.
    pub fn system() -> Self {
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        let real = now_ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    /// Unix nanoseconds for a monotonic timestamp.
    pub fn unix_ns(&self, mono_ns: u64) -> i64 {
        (mono_ns as i64).saturating_add(self.offset_ns)
    }

    /// RFC 3339 UTC with microseconds for a monotonic timestamp.
    pub fn rfc3339(&self, mono_ns: u64) -> String {
        rfc3339_micros(self.unix_ns(mono_ns))
    }
}

/// Formats Unix nanoseconds as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn rfc3339_micros(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let micros = unix_ns.rem_euclid(1_000_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(951_782_400_123_456_789),
            "2000-02-29T00:00:00.123456Z"
        );
        assert_eq!(
            rfc3339_micros(1_795_869_000_000_001_000),
            "2026-11-28T12:30:00.000001Z"
        );
    }

    #[test]
    fn system_clock_is_close_to_now() {
        let c = Clock::system();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let got = c.unix_ns(monotonic_now_ns());
        assert!(
            (got - wall).abs() < 50_000_000,
            "clock off by {} ns",
            got - wall
        );
    }
}
