//! Counting GitHub effects per task (pure): every body the operator writes carries the task's
//! marker `<!-- ccplant:task <namespace>/<name> <uid> -->`, and a merge is an applied
//! `PUT …/pulls/{n}/merge`. An effect held more than once is a duplicate; one a Succeeded task
//! needs but GitHub does not hold is missing.

use serde::Serialize;
use std::collections::BTreeMap;

/// A kind of effect a task has on GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Issue,
    Comment,
    PullRequest,
    Review,
    Merge,
}

/// The `<namespace>/<name> <uid>` of the marker in `body`, if it carries one.
pub fn marker_of(body: &str) -> Option<&str> {
    let start = body.find("<!-- ccplant:task ")? + "<!-- ccplant:task ".len();
    let len = body[start..].find(" -->")?;
    Some(&body[start..start + len])
}

/// The key a merge of pull request `number` is counted under.
pub fn merge_key(number: u64) -> String {
    format!("#{number}")
}

/// One effect a task must have produced exactly once: its kind and key (the marker's
/// `<namespace>/<name> <uid>`, or [`merge_key`] for a merge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub task: String,
    pub effect: Effect,
    pub key: String,
}

/// An effect found more than once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    pub effect: Effect,
    pub key: String,
    pub count: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EffectTally {
    /// Every (effect, key) found more than once, whoever expected it.
    pub duplicates: Vec<Duplicate>,
    /// Expected effects GitHub does not hold: (task, effect).
    pub missing: Vec<(String, Effect)>,
    /// How many of each effect were found.
    pub found: BTreeMap<Effect, usize>,
}

impl EffectTally {
    /// `found` holds one (effect, key) per thing on GitHub: an issue, comment, pull request or
    /// review with the marker's key, or an applied merge with [`merge_key`].
    pub fn of(expected: &[Expected], found: &[(Effect, String)]) -> EffectTally {
        let mut counts: BTreeMap<(Effect, &str), usize> = BTreeMap::new();
        let mut by_effect = BTreeMap::new();
        for (effect, key) in found {
            *counts.entry((*effect, key.as_str())).or_insert(0) += 1;
            *by_effect.entry(*effect).or_insert(0) += 1;
        }
        EffectTally {
            duplicates: counts
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|((effect, key), n)| Duplicate {
                    effect: *effect,
                    key: key.to_string(),
                    count: *n,
                })
                .collect(),
            missing: expected
                .iter()
                .filter(|e| !counts.contains_key(&(e.effect, e.key.as_str())))
                .map(|e| (e.task.clone(), e.effect))
                .collect(),
            found: by_effect,
        }
    }

    /// Extra copies in total: an effect found three times is two duplicates.
    pub fn duplicate_count(&self) -> usize {
        self.duplicates.iter().map(|d| d.count - 1).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn markers_are_found_anywhere_in_a_body() {
        assert_eq!(
            marker_of("Fix it\n\n<!-- ccplant:task drill-crash/issue-3 6f1c -->"),
            Some("drill-crash/issue-3 6f1c")
        );
        assert_eq!(marker_of("<!-- ccplant:task a/b u -->"), Some("a/b u"));
        assert_eq!(marker_of("no marker"), None);
        assert_eq!(marker_of("<!-- ccplant:task a/b u"), None);
        assert_eq!(marker_of("<!-- ccplant-bench setup -->"), None);
    }

    #[test]
    fn duplicates_and_missing_effects_are_counted_per_task_and_kind() {
        let e = |task: &str, effect, key: &str| Expected {
            task: task.into(),
            effect,
            key: key.into(),
        };
        let expected = vec![
            e("issue-0", Effect::Issue, "ns/issue-0 u0"),
            e("issue-0", Effect::Comment, "ns/issue-0 u0"),
            e("merge-0", Effect::Review, "ns/merge-0 u1"),
            e("merge-0", Effect::Merge, "#7"),
            e("pr-0", Effect::PullRequest, "ns/pr-0 u2"),
        ];
        let f = |effect, key: &str| (effect, key.to_string());
        let clean = vec![
            f(Effect::Issue, "ns/issue-0 u0"),
            f(Effect::Comment, "ns/issue-0 u0"),
            f(Effect::Review, "ns/merge-0 u1"),
            f(Effect::Merge, "#7"),
            f(Effect::PullRequest, "ns/pr-0 u2"),
            // An issue and its trigger comment share the key but not the kind.
        ];
        let t = EffectTally::of(&expected, &clean);
        assert_eq!(t.duplicates, vec![]);
        assert_eq!(t.missing, vec![]);
        assert_eq!(t.duplicate_count(), 0);
        assert_eq!(t.found[&Effect::Issue], 1);

        let mut doubled = clean.clone();
        doubled.push(f(Effect::Comment, "ns/issue-0 u0"));
        doubled.push(f(Effect::Comment, "ns/issue-0 u0"));
        doubled.push(f(Effect::Merge, "#7"));
        // A duplicate is a duplicate even for a task nobody expected (e.g. one that failed).
        doubled.push(f(Effect::Review, "ns/gone u9"));
        doubled.push(f(Effect::Review, "ns/gone u9"));
        doubled.retain(|x| x != &f(Effect::PullRequest, "ns/pr-0 u2"));
        let t = EffectTally::of(&expected, &doubled);
        assert_eq!(
            t.duplicates,
            vec![
                Duplicate {
                    effect: Effect::Comment,
                    key: "ns/issue-0 u0".into(),
                    count: 3
                },
                Duplicate {
                    effect: Effect::Review,
                    key: "ns/gone u9".into(),
                    count: 2
                },
                Duplicate {
                    effect: Effect::Merge,
                    key: "#7".into(),
                    count: 2
                },
            ]
        );
        assert_eq!(t.duplicate_count(), 4);
        assert_eq!(t.missing, vec![("pr-0".to_string(), Effect::PullRequest)]);
    }
}
