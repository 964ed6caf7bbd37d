//! The pure parts: percentiles, sliding windows, parsing the apiserver's audit log and metrics,
//! GitHub endpoint templates.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Nearest-rank percentile (`q` in 0..=1) of unsorted samples; `None` without samples.
pub fn percentile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// `{p50, p90, p99, max, mean, count}` of the samples, rounded to 0.1 (null when empty).
pub fn summary(samples: &[f64]) -> Value {
    let mean = (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64);
    json!({
        "p50": percentile(samples, 0.50).map(round1),
        "p90": percentile(samples, 0.90).map(round1),
        "p99": percentile(samples, 0.99).map(round1),
        "max": percentile(samples, 1.0).map(round1),
        "mean": mean.map(round1),
        "count": samples.len(),
    })
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The largest number of `times` (seconds, any origin) inside any half-open window
/// `[t, t + window)`.
pub fn max_in_window(times: &[f64], window: Duration) -> usize {
    worst_window(times, window).map_or(0, |(count, _, _)| count)
}

/// The fullest half-open window `[t, t + window)` over `times`: how many, and the first and
/// last time in it (the earliest such window).
pub fn worst_window(times: &[f64], window: Duration) -> Option<(usize, f64, f64)> {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let w = window.as_secs_f64();
    let mut best: Option<(usize, f64, f64)> = None;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= w {
            start += 1;
        }
        let count = end - start + 1;
        if best.is_none_or(|(c, _, _)| count > c) {
            best = Some((count, sorted[start], sorted[end]));
        }
    }
    best
}

/// One line of the apiserver's audit log (Metadata level, writes only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub user_agent: String,
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub code: u64,
}

impl AuditEntry {
    /// `resource` or `resource/subresource`.
    pub fn target(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Parses one JSON line of the audit log; `None` for anything that is not an audit event.
pub fn parse_audit_line(line: &str) -> Option<AuditEntry> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["kind"] != "Event" {
        return None;
    }
    let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
    let obj = &v["objectRef"];
    Some(AuditEntry {
        user_agent: s(&v["userAgent"]),
        verb: s(&v["verb"]),
        resource: s(&obj["resource"]),
        subresource: s(&obj["subresource"]),
        namespace: s(&obj["namespace"]),
        name: s(&obj["name"]),
        code: v["responseStatus"]["code"].as_u64().unwrap_or(0),
    })
}

/// The complete lines of `bytes` parsed, and how many bytes they span (a trailing partial
/// line, still being written, is left for the next read).
pub fn parse_audit_chunk(bytes: &[u8]) -> (Vec<AuditEntry>, usize) {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&bytes[..complete]);
    (
        text.lines().filter_map(parse_audit_line).collect(),
        complete,
    )
}

/// `apiserver_request_total` summed per (verb, resource, subresource) over the other labels.
pub fn parse_request_totals(metrics: &str) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!(",{name}=\""))
                .nth(1)
                .or_else(|| line.split(&format!("{{{name}=\"")).nth(1))
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *out.entry((label("verb"), label("resource"), label("subresource")))
            .or_insert(0.0) += value;
    }
    out
}

/// `after - before`, keeping only positive differences.
pub fn delta(
    before: &BTreeMap<(String, String, String), f64>,
    after: &BTreeMap<(String, String, String), f64>,
) -> BTreeMap<(String, String, String), f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// A GitHub REST path with the repository and numbers replaced by placeholders, e.g.
/// `/repos/{owner}/{repo}/pulls/{n}/merge`.
pub fn endpoint_template(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let templated = if parts.get(1) == Some(&"repos") && i == 2 {
            "{owner}"
        } else if parts.get(1) == Some(&"repos") && i == 3 {
            "{repo}"
        } else if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            "{n}"
        } else {
            part
        };
        out.push(templated);
    }
    out.join("/")
}

/// Content-creating calls in GitHub's secondary-limit sense: creating issues, comments, pull
/// requests, reviews, and merging.
pub fn is_content_creating(method: &str, path: &str) -> bool {
    let t = endpoint_template(path);
    match method {
        "POST" => [
            "/repos/{owner}/{repo}/issues",
            "/repos/{owner}/{repo}/issues/{n}/comments",
            "/repos/{owner}/{repo}/pulls",
            "/repos/{owner}/{repo}/pulls/{n}/reviews",
        ]
        .contains(&t.as_str()),
        "PUT" => t == "/repos/{owner}/{repo}/pulls/{n}/merge",
        _ => false,
    }
}

/// `utime + stime` in clock ticks from the text of `/proc/PID/stat`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces; fields after the last ')' are fixed:
    // state is field 3, utime field 14, stime field 15.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` field such as `VmHWM` of `/proc/PID/status`, in MiB.
pub fn status_field_mib(status: &str, field: &str) -> Option<f64> {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.50), Some(50.0));
        assert_eq!(percentile(&samples, 0.99), Some(99.0));
        assert_eq!(percentile(&samples, 1.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        let s = summary(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s["p50"], 2.0);
        assert_eq!(s["p99"], 4.0);
        assert_eq!(s["mean"], 2.5);
        assert_eq!(s["count"], 4);
        assert!(summary(&[])["p99"].is_null());
    }

    #[test]
    fn sliding_window_counts_half_open_windows() {
        // 80 calls at t=0, one at exactly t=60: never 81 in a window of 60 s.
        let mut t = vec![0.0; 80];
        t.push(60.0);
        assert_eq!(max_in_window(&t, Duration::from_secs(60)), 80);
        t.push(59.9);
        assert_eq!(max_in_window(&t, Duration::from_secs(60)), 81);
        assert_eq!(max_in_window(&[], Duration::from_secs(60)), 0);
        assert_eq!(
            worst_window(&t, Duration::from_secs(60)),
            Some((81, 0.0, 59.9))
        );
        assert_eq!(max_in_window(&[5.0, 1.0, 3.0], Duration::from_secs(2)), 1);
        assert_eq!(max_in_window(&[5.0, 1.0, 3.0], Duration::from_secs(3)), 2);
    }

    #[test]
    fn audit_lines_parse_and_partial_lines_wait() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/b/pods","verb":"create","user":{"username":"admin"},"sourceIPs":["127.0.0.1"],"userAgent":"ccplant-operator/0.1.0 (bench)","objectRef":{"resource":"pods","namespace":"b","name":"s-1","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestReceivedTimestamp":"2026-01-01T00:00:00.000000Z","stageTimestamp":"2026-01-01T00:00:00.001000Z"}"#;
        let status = r#"{"kind":"Event","verb":"patch","userAgent":"kwok/v0.8.0","objectRef":{"resource":"pods","subresource":"status","namespace":"b","name":"s-1"},"responseStatus":{"code":200}}"#;
        let chunk = format!("{line}\n{status}\n{{\"kind\":\"Ev");
        let (entries, used) = parse_audit_chunk(chunk.as_bytes());
        assert_eq!(used, line.len() + status.len() + 2);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            AuditEntry {
                user_agent: "ccplant-operator/0.1.0 (bench)".into(),
                verb: "create".into(),
                resource: "pods".into(),
                subresource: String::new(),
                namespace: "b".into(),
                name: "s-1".into(),
                code: 201,
            }
        );
        assert_eq!(entries[1].target(), "pods/status");
        assert_eq!(parse_audit_line("not json"), None);
        assert_eq!(parse_audit_chunk(b"{\"partial"), (vec![], 0));
    }

    #[test]
    fn request_totals_sum_over_codes_and_components() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 3
apiserver_request_total{code="404",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 2
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="binding",verb="POST",version="v1"} 7
apiserver_request_total_other{verb="GET"} 9
"#;
        let totals = parse_request_totals(text);
        let k = |v: &str, r: &str, s: &str| (v.to_string(), r.to_string(), s.to_string());
        assert_eq!(totals[&k("GET", "pods", "")], 5.0);
        assert_eq!(totals[&k("POST", "pods", "binding")], 7.0);
        assert_eq!(totals.len(), 2);
        let mut later = totals.clone();
        *later.get_mut(&k("GET", "pods", "")).unwrap() += 4.0;
        assert_eq!(
            delta(&totals, &later),
            BTreeMap::from([(k("GET", "pods", ""), 4.0)])
        );
    }

    #[test]
    fn endpoints_are_templated_and_content_creation_recognised() {
        assert_eq!(
            endpoint_template("/repos/octo/hello/pulls/12/merge"),
            "/repos/{owner}/{repo}/pulls/{n}/merge"
        );
        assert_eq!(
            endpoint_template("/app/installations/77/access_tokens"),
            "/app/installations/{n}/access_tokens"
        );
        assert!(is_content_creating("POST", "/repos/o/r/issues"));
        assert!(is_content_creating("POST", "/repos/o/r/issues/1/comments"));
        assert!(is_content_creating("POST", "/repos/o/r/pulls/3/reviews"));
        assert!(is_content_creating("PUT", "/repos/o/r/pulls/3/merge"));
        assert!(!is_content_creating("GET", "/repos/o/r/pulls/3"));
        assert!(!is_content_creating(
            "POST",
            "/app/installations/7/access_tokens"
        ));
    }

    #[test]
    fn proc_files_parse() {
        let stat =
            "1234 (ccplant op) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 8 0 999 0 0";
        assert_eq!(stat_cpu_ticks(stat), Some(300));
        let status = "Name:\tccplant-operator\nVmHWM:\t   65536 kB\nVmRSS:\t   32768 kB\n";
        assert_eq!(status_field_mib(status, "VmHWM"), Some(64.0));
        assert_eq!(status_field_mib(status, "VmRSS"), Some(32.0));
        assert_eq!(status_field_mib(status, "VmSwap"), None);
    }
}
