//! The text tables.

use super::{Numbers, WorkloadReport};
use std::fmt::Write;

/// Microseconds with about three significant digits.
pub fn us(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// The header line of every table.
pub fn header() -> String {
    format!(
        "{:<20} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5} {:>6} {:>6} {:>6} {:>6} {:>4}",
        "system",
        "ops/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "hit%",
        "ratio",
        "own µs",
        "own pk",
        "cli pk",
        "RSS"
    )
}

/// One row.
pub fn row(label: &str, n: &Numbers, ratio: Option<f64>) -> String {
    format!(
        "{:<20} {:>9.0} {:>7} {:>7} {:>7} {:>7} {:>7} {:>5} {:>6} {:>6} {:>6} {:>6} {:>4}",
        label,
        n.ops_per_sec,
        us(n.p50_us),
        us(n.p90_us),
        us(n.p99_us),
        us(n.p999_us),
        us(n.max_us),
        opt(n.hit_ratio, |h| format!("{:.1}", h * 100.0)),
        opt(ratio, |r| format!("{r:.2}x")),
        opt(n.owner_cpu_us_per_op, |v| format!("{v:.2}")),
        opt(n.owner_parks_per_op, |v| format!("{v:.2}")),
        format!("{:.2}", n.client_parks_per_op),
        opt(n.peak_rss_mib, |v| format!("{v:.0}")),
    )
}

/// A workload's tables and notes, ready to print.
pub fn render(r: &WorkloadReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.header);
    for s in &r.sections {
        let _ = writeln!(out, "\n{}", s.title);
        let _ = writeln!(out, "{}", header());
        for row_ in &s.rows {
            let _ = writeln!(out, "{}", row(&row_.label, &row_.median, row_.ratio));
        }
    }
    let _ = writeln!(
        out,
        "\nratio: ops/s ÷ {} (median of per-round ratios)",
        r.ratio_to
    );
    let _ = writeln!(
        out,
        "latencies in µs; own µs: the cache's owner thread CPU time per op; own pk, cli pk: times the \
         owner / the worker threads blocked (voluntary context switches) per op; RSS: process peak \
         (VmHWM) during the run, MiB"
    );
    for n in &r.notes {
        let _ = writeln!(out, "{n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up_with_the_header() {
        let n = Numbers {
            ops_per_sec: 123456.0,
            p50_us: 1.234,
            p90_us: 12.34,
            p99_us: 123.4,
            p999_us: 1234.0,
            max_us: 99999.0,
            hit_ratio: Some(0.5),
            ..Numbers::default()
        };
        let r = row("cache get+copy", &n, Some(0.5));
        assert_eq!(r.chars().count(), header().chars().count(), "{r}\n{}", header());
        assert!(r.contains("1.23") && r.contains("12.3") && r.contains("123.4") && r.contains("1234"));
        assert!(r.contains("0.50x") && r.contains("50.0"));
        assert!(r.trim_end().ends_with('-'), "no RSS: a dash");
    }
}
