//! `GET /repos/{owner}/{repo}`, its branches and commits.

use super::{Call, RepoPath};
use crate::fake_github::payloads::{self, Outcome, Reply};
use crate::fake_github::state::{Repo, World};

fn find<'w>(world: &'w World, repo: &RepoPath) -> Result<&'w Repo, Reply> {
    world
        .repo(&repo.owner, &repo.name)
        .ok_or_else(payloads::not_found)
}

pub(super) fn get(world: &World, call: &Call, repo: &RepoPath) -> Outcome {
    let repo = find(world, repo)?;
    Ok(Reply::ok(call.render(world).repo(repo)))
}

/// Branches sorted by name, like GitHub.
pub(super) fn list_branches(world: &World, call: &Call, repo: &RepoPath) -> Outcome {
    let repo = find(world, repo)?;
    let render = call.render(world);
    let items = repo
        .branches
        .iter()
        .map(|(name, sha)| render.branch(repo, name, sha))
        .collect();
    Ok(call.page(items))
}

pub(super) fn get_branch(world: &World, call: &Call, repo: &RepoPath, branch: &str) -> Outcome {
    let repo = find(world, repo)?;
    let sha = repo.branches.get(branch).ok_or_else(|| {
        payloads::error(
            404,
            "Branch not found",
            "https://docs.github.com/rest/branches/branches#get-a-branch",
        )
    })?;
    Ok(Reply::ok(call.render(world).branch(repo, branch, sha)))
}

/// `{ref}` is a full SHA, a unique SHA prefix or a branch name.
pub(super) fn get_commit(world: &World, call: &Call, repo: &RepoPath, reference: &str) -> Outcome {
    let repo = find(world, repo)?;
    let commit = repo.resolve(reference).ok_or_else(|| {
        payloads::error(
            422,
            &format!("No commit found for SHA: {reference}"),
            "https://docs.github.com/rest/commits/commits#get-a-commit",
        )
    })?;
    Ok(Reply::ok(call.render(world).commit(repo, commit)))
}
