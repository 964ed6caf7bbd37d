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

/// `GET /repos/{owner}/{repo}/activity`: changes of the repository's refs, newest first by
/// default (`direction`), filtered by `ref` (a branch name or `refs/heads/...`), `actor`
/// (a login), `time_period` (`day`, `week`, `month`, `quarter`, `year`: changes since then) and
/// `activity_type`, paginated (`per_page` at most 100) with a `link` header like GitHub's.
pub(super) fn list_activity(world: &World, call: &Call, repo: &RepoPath) -> Outcome {
    let repo = find(world, repo)?;
    let descending = call.descending(true)?;
    let wanted_ref = call.query.get("ref").map(|r| {
        if r.starts_with("refs/") {
            r.to_string()
        } else {
            format!("refs/heads/{r}")
        }
    });
    let wanted_type = call.query.get("activity_type");
    let actor = call.query.get("actor");
    let since = match call.query.get("time_period") {
        None => None,
        Some(period) => {
            let days = match period {
                "day" => 1,
                "week" => 7,
                "month" => 30,
                "quarter" => 91,
                "year" => 365,
                _ => return Err(super::invalid_parameter("time_period")),
            };
            Some(call.now - chrono::TimeDelta::days(days))
        }
    };
    let render = call.render(world);
    let mut entries: Vec<_> = repo
        .activity
        .iter()
        .filter(|a| wanted_ref.as_deref().is_none_or(|r| a.reference == r))
        .filter(|a| wanted_type.is_none_or(|t| a.activity_type == t))
        .filter(|a| actor.is_none_or(|l| a.actor.eq_ignore_ascii_case(l)))
        .filter(|a| since.is_none_or(|t| a.timestamp >= t))
        .collect();
    entries.sort_by(|a, b| a.timestamp.cmp(&b.timestamp).then(a.id.cmp(&b.id)));
    if descending {
        entries.reverse();
    }
    let items = entries.into_iter().map(|a| render.activity(a)).collect();
    Ok(call.page(items))
}
