//! The clock behind the templates' `strftime_now`, and a C-locale
//! `strftime` (what Python's `datetime.strftime` calls on Linux).

use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar date and time without a time zone (Python's naive
/// `datetime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Where `strftime_now` reads the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The system clock, in UTC.
    #[default]
    SystemUtc,
    /// Always this instant (reproducible prompts and tests).
    Fixed(DateTime),
}

impl Clock {
    pub fn now(&self) -> DateTime {
        match *self {
            Clock::Fixed(t) => t,
            Clock::SystemUtc => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                DateTime::from_unix(secs)
            }
        }
    }
}

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl DateTime {
    /// A date and time; `None` when a field is out of range.
    pub fn new(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    ) -> Option<Self> {
        let t = DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        };
        let valid = (1..=12).contains(&month)
            && day >= 1
            && day <= t.days_in_month()
            && hour < 24
            && minute < 60
            && second < 60;
        valid.then_some(t)
    }

    /// UTC calendar time of a Unix timestamp (Hinnant's `civil_from_days`).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        DateTime {
            year: year.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    fn days_in_month(&self) -> u32 {
        match self.month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if is_leap(self.year.into()) => 29,
            2 => 28,
            _ => 0,
        }
    }

    /// 0 = Sunday.
    fn weekday(&self) -> u32 {
        // 1970-01-01 was a Thursday.
        (days_from_civil(self.year.into(), self.month, self.day) + 4).rem_euclid(7) as u32
    }

    /// 1-based day of the year.
    fn yday(&self) -> u32 {
        (days_from_civil(self.year.into(), self.month, self.day)
            - days_from_civil(self.year.into(), 1, 1)
            + 1) as u32
    }

    /// ISO 8601 week-based year and week number.
    fn iso_week(&self) -> (i64, u32) {
        let wday = (self.weekday() + 6) % 7; // 0 = Monday
        let yday = self.yday() as i64 - 1;
        let year = i64::from(self.year);
        let week = (yday - wday as i64 + 10) / 7;
        let weeks_in = |y: i64| {
            let jan1 = (days_from_civil(y, 1, 1) + 3).rem_euclid(7); // 0 = Monday
            if jan1 == 3 || (jan1 == 2 && is_leap(y)) {
                53
            } else {
                52
            }
        };
        if week < 1 {
            (year - 1, weeks_in(year - 1))
        } else if week > weeks_in(year) as i64 {
            (year + 1, 1)
        } else {
            (year, week as u32)
        }
    }

    /// C-locale `strftime`. Directives it does not know are copied as they
    /// are, as glibc does; `%Z` and `%z` are empty for a naive time.
    pub fn strftime(&self, fmt: &str) -> String {
        let mut out = String::with_capacity(fmt.len() + 16);
        let mut chars = fmt.chars();
        let hour12 = match self.hour % 12 {
            0 => 12,
            h => h,
        };
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let Some(d) = chars.next() else {
                out.push('%');
                break;
            };
            let wd = self.weekday() as usize;
            let mon = MONTHS[(self.month as usize + 11) % 12];
            match d {
                'a' => out.push_str(&DAYS[wd][..3]),
                'A' => out.push_str(DAYS[wd]),
                'b' | 'h' => out.push_str(&mon[..3]),
                'B' => out.push_str(mon),
                'c' => out.push_str(&self.strftime("%a %b %e %H:%M:%S %Y")),
                'C' => out.push_str(&format!("{:02}", self.year.div_euclid(100))),
                'd' => out.push_str(&format!("{:02}", self.day)),
                'D' => out.push_str(&self.strftime("%m/%d/%y")),
                'e' => out.push_str(&format!("{:2}", self.day)),
                'F' => out.push_str(&self.strftime("%Y-%m-%d")),
                'G' => out.push_str(&self.iso_week().0.to_string()),
                'g' => out.push_str(&format!("{:02}", self.iso_week().0.rem_euclid(100))),
                'H' => out.push_str(&format!("{:02}", self.hour)),
                'I' => out.push_str(&format!("{hour12:02}")),
                'j' => out.push_str(&format!("{:03}", self.yday())),
                'k' => out.push_str(&format!("{:2}", self.hour)),
                'l' => out.push_str(&format!("{hour12:2}")),
                'm' => out.push_str(&format!("{:02}", self.month)),
                'M' => out.push_str(&format!("{:02}", self.minute)),
                'n' => out.push('\n'),
                'p' => out.push_str(if self.hour < 12 { "AM" } else { "PM" }),
                'P' => out.push_str(if self.hour < 12 { "am" } else { "pm" }),
                'r' => out.push_str(&self.strftime("%I:%M:%S %p")),
                'R' => out.push_str(&self.strftime("%H:%M")),
                'S' => out.push_str(&format!("{:02}", self.second)),
                't' => out.push('\t'),
                'T' => out.push_str(&self.strftime("%H:%M:%S")),
                'u' => out.push_str(&(if wd == 0 { 7 } else { wd }).to_string()),
                'U' => out.push_str(&format!("{:02}", (self.yday() as usize + 6 - wd) / 7)),
                'V' => out.push_str(&format!("{:02}", self.iso_week().1)),
                'w' => out.push_str(&wd.to_string()),
                'W' => out.push_str(&format!(
                    "{:02}",
                    (self.yday() as usize + 6 - (wd + 6) % 7) / 7
                )),
                'x' => out.push_str(&self.strftime("%m/%d/%y")),
                'X' => out.push_str(&self.strftime("%H:%M:%S")),
                'y' => out.push_str(&format!("{:02}", self.year.rem_euclid(100))),
                'Y' => out.push_str(&self.year.to_string()),
                'z' | 'Z' => {}
                '%' => out.push('%'),
                other => {
                    out.push('%');
                    out.push(other);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_round_trip() {
        for secs in [0i64, 951_782_400, 1_721_989_230, -86_400, 4_102_444_799] {
            let t = DateTime::from_unix(secs);
            let back = days_from_civil(t.year.into(), t.month, t.day) * 86_400
                + i64::from(t.hour * 3600 + t.minute * 60 + t.second);
            assert_eq!(back, secs);
        }
        assert_eq!(
            DateTime::from_unix(1_721_989_230),
            DateTime::new(2024, 7, 26, 10, 20, 30).unwrap()
        );
    }

    #[test]
    fn invalid_dates_are_rejected() {
        assert!(DateTime::new(2023, 2, 29, 0, 0, 0).is_none());
        assert!(DateTime::new(2024, 2, 29, 0, 0, 0).is_some());
        assert!(DateTime::new(2024, 13, 1, 0, 0, 0).is_none());
        assert!(DateTime::new(2024, 1, 1, 24, 0, 0).is_none());
    }

    #[test]
    fn iso_weeks_at_year_edges() {
        // `date(y, m, d).isocalendar()` in Python.
        let cases = [
            ((2021, 1, 3), (2020, 53)),
            ((2021, 1, 4), (2021, 1)),
            ((2024, 12, 30), (2025, 1)),
            ((2026, 12, 31), (2026, 53)),
        ];
        for ((y, m, d), want) in cases {
            let t = DateTime::new(y, m, d, 0, 0, 0).unwrap();
            assert_eq!(t.iso_week(), (want.0 as i64, want.1), "{y}-{m}-{d}");
        }
    }
}
