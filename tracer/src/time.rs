//! Wall-clock formatting without a date crate.
//!
//! Kernel events carry `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); [`clock_offset_ns`] turns them into
//! Unix time, and the formatters here print that time in UTC.

const NS_PER_S: i128 = 1_000_000_000;
const S_PER_DAY: i128 = 86_400;

/// Civil date (year, month 1..=12, day 1..=31) of `days` since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`, valid for any day count).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    // The same in 64 bits for any date a clock gives (128-bit division is a library call).
    if let Ok(days) = i32::try_from(days) {
        let z = i64::from(days) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        return (i128::from(year), month, day);
    }
    civil_from_days_wide(days)
}

/// [`civil_from_days`] for any day count.
fn civil_from_days_wide(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01, the start of a 400-year era
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

/// Splits Unix nanoseconds into (days since the epoch, seconds of day, nanoseconds of second),
/// rounding toward the past so that times before 1970 come out right too.
fn split(unix_ns: i128) -> (i128, u32, u32) {
    // Times after 1970 (every event's) in 64 bits: 128-bit division is a library call.
    if let Ok(ns) = u64::try_from(unix_ns) {
        let secs = ns / NS_PER_S as u64;
        return (
            i128::from(secs / S_PER_DAY as u64),
            (secs % S_PER_DAY as u64) as u32,
            (ns % NS_PER_S as u64) as u32,
        );
    }
    split_wide(unix_ns)
}

/// [`split`] for any time.
fn split_wide(unix_ns: i128) -> (i128, u32, u32) {
    let secs = unix_ns.div_euclid(NS_PER_S);
    let nanos = unix_ns.rem_euclid(NS_PER_S) as u32;
    (
        secs.div_euclid(S_PER_DAY),
        secs.rem_euclid(S_PER_DAY) as u32,
        nanos,
    )
}

/// RFC 3339 UTC timestamp with exactly nine fractional digits: `2026-11-25T18:09:41.123456789Z`.
pub fn rfc3339_nanos(unix_ns: i128) -> String {
    match rfc3339_text(unix_ns) {
        // Only ASCII digits and separators were written: validated, never replaced (the lossy
        // conversion's chunked scan cost more than the digits).
        Some(buf) => std::str::from_utf8(&buf).expect("ASCII").to_owned(),
        None => rfc3339_wide(unix_ns),
    }
}

/// Append [`rfc3339_nanos`] of `unix_ns` to `out`: the event log writes every record's time
/// from its number, with no string of its own (issue 18).
pub fn push_rfc3339(out: &mut Vec<u8>, unix_ns: i128) {
    match rfc3339_text(unix_ns) {
        Some(buf) => out.extend_from_slice(&buf),
        None => out.extend_from_slice(rfc3339_wide(unix_ns).as_bytes()),
    }
}

/// [`rfc3339_nanos`] of years outside 0..=9999 (only a log can hold those).
fn rfc3339_wide(unix_ns: i128) -> String {
    let (days, sod, nanos) = split(unix_ns);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The text of [`rfc3339_nanos`] in a stack buffer, for years 0..=9999 (any clock's).
fn rfc3339_text(unix_ns: i128) -> Option<[u8; 30]> {
    let (days, sod, nanos) = split(unix_ns);
    let (y, mo, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    // Every event's timestamp: digits written in place, not through the formatting machinery
    // (it was 6% of the event pipeline).
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    // Two digits per division: the nanoseconds alone were nine.
    let mut put2 = |at: usize, v: u32| {
        buf[at] = b'0' + (v / 10) as u8;
        buf[at + 1] = b'0' + (v % 10) as u8;
    };
    put2(0, y as u32 / 100);
    put2(2, y as u32 % 100);
    put2(5, mo);
    put2(8, d);
    put2(11, sod / 3600);
    put2(14, sod / 60 % 60);
    put2(17, sod % 60);
    put2(20, nanos / 10_000_000);
    put2(22, nanos / 100_000 % 100);
    put2(24, nanos / 1_000 % 100);
    put2(26, nanos / 10 % 100);
    buf[28] = b'0' + (nanos % 10) as u8;
    Some(buf)
}

/// serde for `Record`'s time: the number written as [`rfc3339_nanos`], read back with
/// [`parse_rfc3339`].
pub mod serde_rfc3339 {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ns: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_nanos(*ns))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        super::parse_rfc3339(&text)
            .ok_or_else(|| D::Error::custom(format_args!("bad timestamp `{text}`")))
    }
}

/// Time of day in UTC with milliseconds, `18:09:41.123`, for the terminal (truncated, not
/// rounded, so a line never appears to come from the next second).
pub fn hms_millis(unix_ns: i128) -> String {
    let (_, sod, nanos) = split(unix_ns);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        nanos / 1_000_000
    )
}

fn read_clock(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime writes only into it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        // Both clocks always exist on Linux; a failure would mean a broken libc. Zero keeps the
        // caller going with monotonic-looking times rather than aborting the trace.
        return 0;
    }
    i128::from(ts.tv_sec) * NS_PER_S + i128::from(ts.tv_nsec)
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC in nanoseconds: add it to a `bpf_ktime_get_ns()` value to get
/// Unix time. The realtime read is bracketed by two monotonic reads and compared with their
/// midpoint, which halves the error a preemption between the reads would cause.
pub fn clock_offset_ns() -> i128 {
    let mono_before = read_clock(libc::CLOCK_MONOTONIC);
    let real = read_clock(libc::CLOCK_REALTIME);
    let mono_after = read_clock(libc::CLOCK_MONOTONIC);
    real - (mono_before + (mono_after - mono_before) / 2)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i128, m: u32, d: u32) -> i128 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i128::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i128::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days of month `m` of year `y` (Gregorian: a year divisible by 4 is leap, by 100 not, by
/// 400 again): `2026-02-31` is no date, not March 3rd.
fn days_in_month(y: i128, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Unix nanoseconds of a UTC RFC 3339 timestamp as [`rfc3339_nanos`] writes it (any number of
/// fractional digits, `Z` or `+00:00`). `None` for anything else: logs are read, not trusted.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let y: i128 = d.next()?.parse().ok()?;
    let mo: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=days_in_month(y, mo)).contains(&day) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let h: i128 = t.next()?.parse().ok()?;
    let mi: i128 = t.next()?.parse().ok()?;
    let sec: i128 = t.next()?.parse().ok()?;
    if h > 23 || mi > 59 || sec > 60 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let nanos: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse::<i128>().ok()? * 10i128.pow(9 - frac.len() as u32)
    };
    let days = days_from_civil(y, mo, day);
    Some(((days * S_PER_DAY + h * 3600 + mi * 60 + sec) * NS_PER_S) + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = NS_PER_S;

    #[test]
    fn epoch() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(hms_millis(0), "00:00:00.000");
    }

    #[test]
    fn incident_day() {
        // `date -u -d 2026-11-25T18:09:41Z +%s` = 1795630181
        let t = 1_795_630_181 * S + 123_456_789;
        assert_eq!(rfc3339_nanos(t), "2026-11-25T18:09:41.123456789Z");
        assert_eq!(hms_millis(t), "18:09:41.123");
    }

    #[test]
    fn leap_day() {
        // 2024-02-29T23:59:59Z = 1709251199; one second later is March 1st.
        assert_eq!(
            rfc3339_nanos(1_709_251_199 * S + 999_999_999),
            "2024-02-29T23:59:59.999999999Z"
        );
        assert_eq!(
            rfc3339_nanos(1_709_251_200 * S),
            "2024-03-01T00:00:00.000000000Z"
        );
        // 2000 is a leap year (divisible by 400): 2000-03-01 = 951868800, the day before is Feb 29.
        assert_eq!(
            rfc3339_nanos(951_868_800 * S),
            "2000-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos((951_868_800 - 86_400) * S),
            "2000-02-29T00:00:00.000000000Z"
        );
        // 2100 is not: 2100-02-28T12:00:00Z = 4107499200, a day later is March 1st.
        assert_eq!(
            rfc3339_nanos(4_107_499_200 * S),
            "2100-02-28T12:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos((4_107_499_200 + 86_400) * S),
            "2100-03-01T12:00:00.000000000Z"
        );
    }

    #[test]
    fn the_64_bit_paths_agree_with_the_wide_ones() {
        let mut t: i128 = 1;
        let mut samples = vec![0, 1, 86_399 * S, 86_400 * S, i128::from(u64::MAX)];
        while t < i128::from(u64::MAX) / 3 {
            samples.extend([t - 1, t, t + 1, t * 2 + 12_345]);
            t *= 3;
        }
        for t in samples {
            assert_eq!(split(t), split_wide(t), "{t}");
        }
        for days in (-3_000_000..3_000_000).step_by(997).chain([
            i128::from(i32::MIN),
            i128::from(i32::MAX),
            -719_468,
            -719_469,
            59,
            60,
            11_016,
        ]) {
            assert_eq!(civil_from_days(days), civil_from_days_wide(days), "{days}");
        }
    }

    #[test]
    fn before_epoch() {
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339_nanos(-S), "1969-12-31T23:59:59.000000000Z");
        assert_eq!(hms_millis(-1), "23:59:59.999");
    }

    #[test]
    fn extremes_do_not_panic() {
        for t in [
            i128::MIN,
            i128::MAX,
            i128::from(i64::MIN),
            i128::from(u64::MAX),
        ] {
            assert!(rfc3339_nanos(t).ends_with('Z'));
            assert_eq!(hms_millis(t).len(), 12);
        }
    }

    #[test]
    fn offset_is_plausible() {
        // Realtime is past 2020 on any machine running this; monotonic is small next to it.
        let off = clock_offset_ns();
        assert!(off > 1_577_836_800 * S, "offset {off}");
        let now = read_clock(libc::CLOCK_MONOTONIC) + off;
        let real = read_clock(libc::CLOCK_REALTIME);
        assert!((real - now).abs() < S, "drift {}", real - now);
    }

    #[test]
    fn rfc3339_round_trips_and_refuses_garbage() {
        for ns in [
            0i128,
            1_795_630_181_123_456_789,
            -1,
            951_782_400_000_000_001,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339_nanos(ns)), Some(ns), "{ns}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-25T20:24:17.26Z"),
            parse_rfc3339("2026-11-25T20:24:17.260000000Z")
        );
        for bad in [
            "",
            "2026-11-25",
            "2026-13-01T00:00:00Z",
            "2026-11-25T25:00:00Z",
            "x-1-1T0:0:0Z",
            "2026-11-25T20:24:17.26",
            // Impossible dates are refused, not rolled into the next month.
            "2026-02-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-00T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        // Leap days that exist.
        for good in [
            "2028-02-29T00:00:00Z",
            "2000-02-29T12:00:00Z",
            "2026-12-31T23:59:60Z",
        ] {
            assert!(parse_rfc3339(good).is_some(), "{good}");
        }
    }
}
