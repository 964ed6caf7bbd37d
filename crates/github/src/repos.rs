//! Repositories, branches, commits and head-branch selection.

use crate::client::{Call, GitHubClient, path_segment};
use crate::error::Result;
use crate::head::select_head_branch;
use crate::models::{
    Branch, BranchHead, Commit, Repository, WireBranch, WireCommit, WireRepository,
};
use crate::repo::RepoRef;
use chrono::DateTime;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeSet, HashMap};

/// Commits fetched at once while resolving the head branch.
const COMMIT_FETCH_CONCURRENCY: usize = 4;

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

    /// Every branch (`GET /repos/{owner}/{repo}/branches`, page by page, at most
    /// `branch_max_pages` pages).
    pub async fn branches(&self, repo: &RepoRef) -> Result<Vec<Branch>> {
        let per_page = self.inner.page_size;
        let mut branches = Vec::new();
        let mut page = 1;
        for _ in 0..self.inner.branch_max_pages {
            let call = Call::get(
                "GET /repos/{owner}/{repo}/branches",
                format!("{}/branches", repo_path(repo)),
            );
            let listed = self.page::<WireBranch>(call, per_page, page).await?;
            let next = listed.next(page);
            branches.extend(listed.items.into_iter().map(Branch::from));
            match next {
                Some(next) => page = next,
                None => return Ok(branches),
            }
        }
        tracing::warn!(
            repository = %repo,
            branches = branches.len(),
            "more branches than the client reads; choosing among the first ones"
        );
        Ok(branches)
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

    /// The branch whose head commit has the newest committer date, excluding `base` (ties:
    /// first name). Lists all branches, then fetches each distinct head commit.
    /// `None` when the repository has no branch besides `base`.
    pub async fn resolve_head_branch(
        &self,
        repo: &RepoRef,
        base: &str,
    ) -> Result<Option<BranchHead>> {
        let branches = self.branches(repo).await?;
        // Owned SHAs: a stream of futures borrowing `&str` items is not `Send` for every
        // lifetime, which the operator's spawned reconcilers require.
        let shas: BTreeSet<String> = branches
            .iter()
            .filter(|branch| branch.name != base)
            .map(|branch| branch.sha.clone())
            .collect();
        let dates: HashMap<String, DateTime<chrono::Utc>> = futures::stream::iter(shas)
            .map(|sha: String| async move {
                let commit = self.commit(repo, &sha).await?;
                let date = commit
                    .committed_at
                    .or(commit.authored_at)
                    .unwrap_or(DateTime::<chrono::Utc>::MIN_UTC);
                Ok::<_, crate::Error>((sha.to_string(), date))
            })
            .buffer_unordered(COMMIT_FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        let heads: Vec<BranchHead> = branches
            .into_iter()
            .filter_map(|branch| {
                let committed_at = *dates.get(&branch.sha)?;
                Some(BranchHead {
                    name: branch.name,
                    sha: branch.sha,
                    committed_at,
                })
            })
            .collect();
        Ok(select_head_branch(&heads, base).cloned())
    }
}
