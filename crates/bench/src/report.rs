//! The JSON files: each run's figures beside the previous run's and the targets.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::path::Path;

/// A target: the value must be at most (or at least) `target`. `met` is null when the value
/// was not measured.
pub fn target(target: f64, value: Option<f64>, at_most: bool, note: &str) -> Value {
    let met = value.map(|v| if at_most { v <= target } else { v >= target });
    let mut t = json!({
        "target": target,
        "value": value,
        "met": met,
        "rule": if at_most { "value <= target" } else { "value >= target" },
    });
    if !note.is_empty() {
        t["note"] = json!(note);
    }
    t
}

/// The figures of the file at `path` from an earlier run (its own `previous` left out), if any.
pub fn previous(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut v: Value = serde_json::from_str(&text).ok()?;
    let obj = v.as_object_mut()?;
    obj.remove("previous");
    Some(v)
}

/// Adds `previous` (from the file being replaced) and writes `report` to `path`.
pub fn write(path: &Path, mut report: Value) -> Result<Value> {
    report["previous"] = previous(path).unwrap_or(Value::Null);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(path, format!("{text}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn targets_say_whether_they_are_met() {
        let t = target(0.9, Some(0.95), false, "");
        assert_eq!(t["met"], true);
        assert!(t.get("note").is_none());
        assert_eq!(target(100.0, Some(120.0), true, "")["met"], false);
        assert_eq!(target(0.0, Some(0.0), true, "")["met"], true);
        let unmeasured = target(64.0, None, true, "n=1000");
        assert!(unmeasured["met"].is_null());
        assert_eq!(unmeasured["note"], "n=1000");
    }

    #[test]
    fn the_previous_run_is_kept_beside_the_new_one_without_nesting() {
        let dir = tempdir();
        let path = dir.join("sub/sessions.json");
        let first = write(&path, json!({"n": 10, "ratio_to_floor": 0.5})).unwrap();
        assert!(first["previous"].is_null());
        let second = write(&path, json!({"n": 10, "ratio_to_floor": 0.8})).unwrap();
        assert_eq!(second["previous"], json!({"n": 10, "ratio_to_floor": 0.5}));
        let third = write(&path, json!({"n": 10, "ratio_to_floor": 0.9})).unwrap();
        assert_eq!(third["previous"], json!({"n": 10, "ratio_to_floor": 0.8}));
        let on_disk: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(on_disk, third);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ccplant-bench-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
