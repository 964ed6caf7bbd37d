//! The invisible idempotency marker written into every body the operator creates, so that a
//! later reconcile can find the effect of an attempt whose response was lost.

/// `<!-- ccplant:task <namespace>/<name> <uid> -->`
pub fn marker(namespace: &str, name: &str, uid: &str) -> String {
    format!("<!-- ccplant:task {namespace}/{name} {uid} -->")
}

/// The body followed by a blank line and the marker. An empty body becomes the marker alone,
/// and a body that already carries the marker is returned unchanged.
pub fn with_marker(body: &str, marker: &str) -> String {
    if has_marker(body, marker) {
        return body.to_string();
    }
    let body = body.trim_end();
    if body.is_empty() {
        marker.to_string()
    } else {
        format!("{body}\n\n{marker}")
    }
}

/// Whether `text` (an issue, comment, PR or review body) carries `marker`.
pub fn has_marker(text: &str, marker: &str) -> bool {
    !marker.is_empty() && text.contains(marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c2a7e-0b1d-4c55-9a43-1f0e2d3c4b5a";

    #[test]
    fn marker_format() {
        assert_eq!(
            marker("team-a", "open-pr", UID),
            "<!-- ccplant:task team-a/open-pr 6f1c2a7e-0b1d-4c55-9a43-1f0e2d3c4b5a -->"
        );
    }

    #[test]
    fn body_gets_marker_after_a_blank_line() {
        let m = marker("ns", "t", UID);
        assert_eq!(
            with_marker("Fix the bug", &m),
            format!("Fix the bug\n\n{m}")
        );
        assert_eq!(
            with_marker("Fix the bug\n", &m),
            format!("Fix the bug\n\n{m}")
        );
        assert_eq!(with_marker("", &m), m);
        let once = with_marker("LGTM", &m);
        assert_eq!(with_marker(&once, &m), once);
    }

    #[test]
    fn marker_is_found_only_for_the_same_task() {
        let m = marker("ns", "t", UID);
        let body = with_marker("hello", &m);
        assert!(has_marker(&body, &m));
        assert!(has_marker(&body.replace('\n', "\r\n"), &m));
        assert!(!has_marker(&body, &marker("ns", "t", "other-uid")));
        assert!(!has_marker(&body, &marker("ns", "t2", UID)));
        assert!(!has_marker("hello", &m));
        assert!(!has_marker(&body, ""));
    }
}
