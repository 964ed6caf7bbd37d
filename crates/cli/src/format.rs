//! Pure text formatting: durations and kubectl-style tables.

use std::time::Duration;

/// kubectl's age format (`HumanDuration` in apimachinery): `45s`, `3m20s`, `25m`, `5h3m`,
/// `30h`, `3d4h`, `12d`, `2y45d`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (minutes, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        with_unit(minutes, 'm', secs % 60, 's')
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with_unit(hours, 'h', minutes % 60, 'm')
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with_unit(days, 'd', hours % 24, 'h')
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        with_unit(days / 365, 'y', days % 365, 'd')
    } else {
        format!("{}y", days / 365)
    }
}

/// Time left as its two largest units, so a 24h session shows `23h59m` right after it started:
/// `45s`, `12m30s`, `23h59m`, `2d3h`.
pub fn remaining(d: Duration) -> String {
    let secs = d.as_secs();
    let (minutes, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    if days > 0 {
        with_unit(days, 'd', hours % 24, 'h')
    } else if hours > 0 {
        with_unit(hours, 'h', minutes % 60, 'm')
    } else if minutes > 0 {
        with_unit(minutes, 'm', secs % 60, 's')
    } else {
        format!("{secs}s")
    }
}

fn with_unit(major: u64, major_unit: char, minor: u64, minor_unit: char) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

/// Rows aligned in columns separated by three spaces, as kubectl prints them; the last column
/// is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (45, "45s"),
            (119, "119s"),
            (200, "3m20s"),
            (1500, "25m"),
            (5 * 3600 + 180, "5h3m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (12 * 86_400, "12d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn time_left_shows_two_units() {
        let cases = [
            (45, "45s"),
            (750, "12m30s"),
            (24 * 3600 - 60, "23h59m"),
            (3600, "1h"),
            (2 * 86_400 + 3 * 3600 + 59, "2d3h"),
        ];
        for (secs, want) in cases {
            assert_eq!(remaining(Duration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn columns_are_aligned() {
        let rows = vec![
            vec![
                "a-long-name".to_owned(),
                "Running".to_owned(),
                "1m".to_owned(),
            ],
            vec!["b".to_owned(), "<none>".to_owned(), "2m".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "PHASE", "AGE"], &rows),
            "NAME          PHASE     AGE\n\
             a-long-name   Running   1m\n\
             b             <none>    2m\n"
        );
    }
}
