//! Repositories, branches, commits and head-branch selection.

use crate::client::{Call, GitHubClient, path_segment};
use crate::error::Result;
use crate::models::{BranchHead, Commit, Repository, WireActivity, WireCommit, WireRepository};
use crate::repo::RepoRef;
use std::collections::BTreeMap;

pub(crate) fn repo_path(repo: &RepoRef) -> String {
    format!(
        "/repos/{}/{}",
        path_segment(&repo.owner),
        path_segment(&repo.name)
    )
}

impl GitHubClient {
    /// `GET /repos/{owner}/{repo}`.
    pub async fn repository(&self, repo: &RepoRef) -> Result<Repository> {
        let wire: WireRepository = self
            .fetch(Call::get("GET /repos/{owner}/{repo}", repo_path(repo)))
            .await?;
        Ok(wire.into())
    }

    /// `GET /repos/{owner}/{repo}/commits/{sha}`.
    pub async fn commit(&self, repo: &RepoRef, sha: &str) -> Result<Commit> {
        let wire: WireCommit = self
            .fetch(Call::get(
                "GET /repos/{owner}/{repo}/commits/{ref}",
                format!("{}/commits/{}", repo_path(repo), path_segment(sha)),
            ))
            .await?;
        Ok(wire.into())
    }

    /// The most recently pushed branch (a push, force push or branch creation), excluding
    /// `base` and branches deleted since (ties: the first name), from one page of the
    /// repository activity API — one request whatever the number of branches. `None` when none
    /// of the newest [`ACTIVITY_PAGE`] ref changes is a push to another branch that still
    /// exists (the caller names the head then).
    /// `GET /repos/{owner}/{repo}/activity?direction=desc&per_page=100`.
    pub async fn resolve_head_branch(
        &self,
        repo: &RepoRef,
        base: &str,
    ) -> Result<Option<BranchHead>> {
        let call = Call::get(
            "GET /repos/{owner}/{repo}/activity",
            format!("{}/activity", repo_path(repo)),
        )
        .query("direction", "desc");
        let listed = self.page::<WireActivity>(call, ACTIVITY_PAGE, 1).await?;
        Ok(newest_pushed_branch(&listed.items, base))
    }
}

/// Ref changes read at once while resolving the head branch (GitHub's maximum page).
pub const ACTIVITY_PAGE: u32 = 100;

/// Activity types that are pushes: someone put new work on the branch (a merge into it or a
/// deletion is not work to open a pull request from).
const PUSHES: [&str; 3] = ["push", "force_push", "branch_creation"];

/// The newest push to a branch other than `base` that was not deleted afterwards, from
/// activity entries newest first (ties: the first name). Its SHA is the branch's current tip:
/// the `after` of the branch's newest change (a merge into it after the push moves it).
pub(crate) fn newest_pushed_branch(entries: &[WireActivity], base: &str) -> Option<BranchHead> {
    // Branch → its newest change's `after`, or `None` when that change deleted it.
    let mut tip: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    let mut best: Option<BranchHead> = None;
    for entry in entries {
        let Some(branch) = entry.reference.strip_prefix("refs/heads/") else {
            continue;
        };
        let deleted = entry.activity_type == "branch_deletion";
        let current = *tip
            .entry(branch)
            .or_insert((!deleted).then_some(entry.after.as_str()));
        let Some(sha) = current else {
            continue;
        };
        if branch == base || !PUSHES.contains(&entry.activity_type.as_str()) {
            continue;
        }
        let candidate = BranchHead {
            name: branch.to_string(),
            sha: sha.to_string(),
            pushed_at: entry.timestamp,
        };
        let better = best.as_ref().is_none_or(|b| {
            candidate.pushed_at > b.pushed_at
                || (candidate.pushed_at == b.pushed_at && candidate.name < b.name)
        });
        if better {
            best = Some(candidate);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn entry(branch: &str, kind: &str, secs: i64, after: &str) -> WireActivity {
        WireActivity {
            reference: format!("refs/heads/{branch}"),
            after: after.to_string(),
            timestamp: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
            activity_type: kind.to_string(),
        }
    }

    fn pick(entries: &[WireActivity], base: &str) -> Option<(String, String)> {
        newest_pushed_branch(entries, base).map(|b| (b.name, b.sha))
    }

    /// (case, activity newest first, the branch and SHA chosen).
    type Case = (
        &'static str,
        Vec<WireActivity>,
        Option<(&'static str, &'static str)>,
    );

    #[test]
    fn the_newest_push_to_another_live_branch_wins() {
        let table: Vec<Case> = vec![
            ("nothing", vec![], None),
            (
                "only the base moved",
                vec![entry("main", "push", 9, "m")],
                None,
            ),
            (
                "newest first; the base is skipped",
                vec![
                    entry("main", "pr_merge", 9, "m"),
                    entry("b", "push", 8, "b2"),
                    entry("a", "push", 7, "a1"),
                ],
                Some(("b", "b2")),
            ),
            (
                "a branch deleted after its push is skipped",
                vec![
                    entry("b", "branch_deletion", 9, "0"),
                    entry("b", "push", 8, "b2"),
                    entry("a", "force_push", 7, "a1"),
                ],
                Some(("a", "a1")),
            ),
            (
                "only the newest change of a branch counts",
                vec![
                    entry("a", "push", 9, "a2"),
                    entry("a", "branch_creation", 1, "a1"),
                ],
                Some(("a", "a2")),
            ),
            (
                "a merge into another branch is not a push",
                vec![
                    entry("release", "pr_merge", 9, "r2"),
                    entry("a", "push", 7, "a1"),
                ],
                Some(("a", "a1")),
            ),
            (
                "a branch merged into after its push keeps its push time, at its new tip",
                vec![
                    entry("a", "merge_queue_merge", 9, "a2"),
                    entry("b", "push", 8, "b1"),
                    entry("a", "push", 8, "a1"),
                ],
                Some(("a", "a2")),
            ),
            (
                "a branch deleted and created again is live",
                vec![
                    entry("a", "branch_creation", 9, "a2"),
                    entry("a", "branch_deletion", 8, "0"),
                    entry("a", "push", 7, "a1"),
                ],
                Some(("a", "a2")),
            ),
            (
                "only deletions and base pushes: nothing",
                vec![
                    entry("a", "branch_deletion", 9, "0"),
                    entry("main", "force_push", 8, "m"),
                    entry("a", "push", 7, "a1"),
                ],
                None,
            ),
            (
                "a tie goes to the first name",
                vec![
                    entry("zeta", "push", 5, "z"),
                    entry("alpha", "push", 5, "x"),
                ],
                Some(("alpha", "x")),
            ),
        ];
        for (name, entries, want) in table {
            let want = want.map(|(b, s)| (b.to_string(), s.to_string()));
            assert_eq!(pick(&entries, "main"), want, "{name}");
        }
    }

    #[test]
    fn tags_are_not_branches() {
        let mut tag = entry("v1", "push", 9, "t");
        tag.reference = "refs/tags/v1".into();
        assert_eq!(
            pick(&[tag, entry("a", "push", 1, "a1")], "main"),
            Some(("a".into(), "a1".into()))
        );
    }
}
