//! Which branch a pull request is opened from when the task does not name one.

use crate::models::BranchHead;

/// The branch whose head commit is newest (committer date), excluding `base`. Ties go to the
/// alphabetically first name, so the choice does not depend on GitHub's listing order.
pub fn select_head_branch<'a>(branches: &'a [BranchHead], base: &str) -> Option<&'a BranchHead> {
    branches
        .iter()
        .filter(|branch| branch.name != base)
        .min_by(|a, b| {
            b.committed_at
                .cmp(&a.committed_at)
                .then_with(|| a.name.cmp(&b.name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn branch(name: &str, secs: i64) -> BranchHead {
        BranchHead {
            name: name.to_string(),
            sha: format!("sha-{name}"),
            committed_at: at(secs),
        }
    }

    fn pick(branches: &[BranchHead], base: &str) -> Option<String> {
        select_head_branch(branches, base).map(|b| b.name.clone())
    }

    #[test]
    fn newest_commit_wins() {
        let branches = [
            branch("main", 100),
            branch("a", 50),
            branch("b", 70),
            branch("c", 60),
        ];
        assert_eq!(pick(&branches, "main"), Some("b".into()));
    }

    #[test]
    fn base_is_excluded_even_when_newest() {
        let branches = [branch("main", 900), branch("feature", 10)];
        assert_eq!(pick(&branches, "main"), Some("feature".into()));
        assert_eq!(pick(&branches, "feature"), Some("main".into()));
    }

    #[test]
    fn ties_go_to_the_first_name_whatever_the_order() {
        let one = [
            branch("zeta", 5),
            branch("alpha", 5),
            branch("mid", 5),
            branch("old", 1),
        ];
        let mut two = one.clone();
        two.reverse();
        assert_eq!(pick(&one, "main"), Some("alpha".into()));
        assert_eq!(pick(&two, "main"), Some("alpha".into()));
    }

    #[test]
    fn nothing_to_pick() {
        assert_eq!(pick(&[], "main"), None);
        assert_eq!(pick(&[branch("main", 1)], "main"), None);
    }
}
