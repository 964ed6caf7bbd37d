//! Pull requests, reviews and merges.

use super::{Call, RepoPath, check_body_length, optional_string};
use crate::fake_github::ids;
use crate::fake_github::payloads::{self, Outcome, Reply};
use crate::fake_github::state::{
    Commit, GitIdentity, Issue, IssueState, Pull, Repo, Review, World,
};
use serde_json::{Value, json};
use std::cmp::Ordering;

const CREATE_DOC: &str = "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";
const REVIEW_DOC: &str =
    "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request";
const MERGE_DOC: &str = "https://docs.github.com/rest/pulls/pulls#merge-a-pull-request";

fn find_repo<'w>(world: &'w World, at: &RepoPath) -> Result<&'w Repo, Reply> {
    world
        .repo(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)
}

/// The issue of pull request `number`; 404 when there is none (or it is a plain issue).
fn find_pull(repo: &Repo, number: u64) -> Result<&Issue, Reply> {
    repo.issues
        .get(&number)
        .filter(|i| i.pull.is_some())
        .ok_or_else(payloads::not_found)
}

fn required_string(
    body: &serde_json::Map<String, Value>,
    field: &str,
    doc: &str,
) -> Result<String, Reply> {
    optional_string(body, "PullRequest", field)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            payloads::validation_failed(
                doc,
                vec![payloads::field_error("PullRequest", field, "missing_field")],
            )
        })
}

pub(super) fn create(world: &mut World, call: &Call, at: &RepoPath) -> Outcome {
    let body = call.object()?;
    let title = required_string(body, "title", CREATE_DOC)?;
    let head = required_string(body, "head", CREATE_DOC)?;
    let base = required_string(body, "base", CREATE_DOC)?;
    let text = optional_string(body, "PullRequest", "body")?;
    check_body_length("PullRequest", text.as_deref())?;
    let draft = body.get("draft").and_then(Value::as_bool).unwrap_or(false);
    let author = call.author()?;

    let repo = find_repo(world, at)?;
    // `head` is "branch" or "owner:branch"; forks are not modelled, so the owner must match.
    let (head_owner, head_ref) = head
        .split_once(':')
        .unwrap_or((repo.owner.as_str(), head.as_str()));
    let base_sha = repo.branches.get(&base);
    let head_sha = repo
        .branches
        .get(head_ref)
        .filter(|_| head_owner.eq_ignore_ascii_case(&repo.owner));
    let mut invalid = Vec::new();
    if base_sha.is_none() {
        invalid.push(payloads::field_error("PullRequest", "base", "invalid"));
    }
    if head_sha.is_none() {
        invalid.push(payloads::field_error("PullRequest", "head", "invalid"));
    }
    let (Some(base_sha), Some(head_sha)) = (base_sha, head_sha) else {
        return Err(payloads::validation_failed(CREATE_DOC, invalid));
    };
    let already_open = repo.issues.values().any(|i| {
        i.state == IssueState::Open
            && i.pull
                .as_ref()
                .is_some_and(|p| p.head_ref == head_ref && p.base_ref == base)
    });
    if already_open {
        let message = format!(
            "A pull request already exists for {}:{head_ref}.",
            repo.owner
        );
        return Err(payloads::validation_failed(
            CREATE_DOC,
            vec![payloads::custom_error("PullRequest", &message)],
        ));
    }
    if repo.commits_between(base_sha, head_sha) == 0 {
        let message = format!("No commits between {base} and {head}");
        return Err(payloads::validation_failed(
            CREATE_DOC,
            vec![payloads::custom_error("PullRequest", &message)],
        ));
    }
    let head_ref = head_ref.to_string();
    let head_sha = head_sha.clone();

    let issue_id = world.next_id();
    let pull_id = world.next_id();
    let repo = world
        .repo_mut(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let number = repo.next_number();
    repo.issues.insert(
        number,
        Issue::opened(
            issue_id,
            number,
            title,
            text,
            author,
            call.now,
            Some(Pull::opened(pull_id, head_ref, head_sha, base, draft)),
        ),
    );
    repo.updated_at = call.now;
    let repo = find_repo(world, at)?;
    let issue = find_pull(repo, number)?;
    Ok(Reply::written(
        201,
        Some(call.render(world).pull(repo, issue, true)),
    ))
}

/// `GET /pulls`: `state` (open), `head` (`owner:branch`; like GitHub, a value without the owner
/// is ignored), `base`, `sort` (created | updated), `direction` (desc).
pub(super) fn list(world: &World, call: &Call, at: &RepoPath) -> Outcome {
    let repo = find_repo(world, at)?;
    let state = match call.query.get("state") {
        None | Some("open") => Some(IssueState::Open),
        Some("closed") => Some(IssueState::Closed),
        Some("all") => None,
        Some(_) => return Err(super::invalid_parameter("state")),
    };
    let head = call.query.get("head").and_then(|h| h.split_once(':'));
    let base = call.query.get("base");
    let key: fn(&Issue, &Issue) -> Ordering = match call.query.get("sort").unwrap_or("created") {
        "created" | "popularity" => |a, b| a.created_at.cmp(&b.created_at),
        "updated" | "long-running" => |a, b| a.updated_at.cmp(&b.updated_at),
        _ => return Err(super::invalid_parameter("sort")),
    };
    let descending = call.descending(true)?;

    let mut pulls: Vec<&Issue> = repo
        .issues
        .values()
        .filter(|i| state.is_none_or(|s| i.state == s))
        .filter(|i| {
            i.pull.as_ref().is_some_and(|p| {
                head.is_none_or(|(owner, branch)| {
                    owner.eq_ignore_ascii_case(&repo.owner) && p.head_ref == branch
                }) && base.is_none_or(|b| p.base_ref == b)
            })
        })
        .collect();
    pulls.sort_by(|a, b| {
        let order = key(a, b).then(a.number.cmp(&b.number));
        if descending { order.reverse() } else { order }
    });
    let render = call.render(world);
    Ok(call.page(
        pulls
            .into_iter()
            .map(|i| render.pull(repo, i, false))
            .collect(),
    ))
}

pub(super) fn get(world: &World, call: &Call, at: &RepoPath, number: u64) -> Outcome {
    let repo = find_repo(world, at)?;
    let issue = find_pull(repo, number)?;
    Ok(Reply::ok(call.render(world).pull(repo, issue, true)))
}

pub(super) fn list_reviews(world: &World, call: &Call, at: &RepoPath, number: u64) -> Outcome {
    let repo = find_repo(world, at)?;
    let issue = find_pull(repo, number)?;
    let render = call.render(world);
    let items = issue
        .pull
        .iter()
        .flat_map(|p| &p.reviews)
        .map(|r| render.review(repo, issue, r))
        .collect();
    Ok(call.page(items))
}

/// `event`: APPROVE, REQUEST_CHANGES, COMMENT, or none for a pending review. GitHub refuses
/// approving or requesting changes on one's own pull request.
pub(super) fn create_review(world: &mut World, call: &Call, at: &RepoPath, number: u64) -> Outcome {
    let body = call.object()?;
    let text = optional_string(body, "PullRequestReview", "body")?.unwrap_or_default();
    check_body_length("PullRequestReview", Some(&text))?;
    let commit_id = optional_string(body, "PullRequestReview", "commit_id")?;
    let event = optional_string(body, "PullRequestReview", "event")?;
    let reviewer = call.author()?;

    let repo = find_repo(world, at)?;
    let issue = find_pull(repo, number)?;
    let own = issue.user.eq_ignore_ascii_case(&reviewer);
    let state = match event.as_deref() {
        None | Some("") => "PENDING",
        Some("APPROVE") if own => {
            return Err(payloads::unprocessable(
                REVIEW_DOC,
                &["Review Can not approve your own pull request"],
            ));
        }
        Some("REQUEST_CHANGES") if own => {
            return Err(payloads::unprocessable(
                REVIEW_DOC,
                &["Review Can not request changes on your own pull request"],
            ));
        }
        Some("APPROVE") => "APPROVED",
        Some("REQUEST_CHANGES") => "CHANGES_REQUESTED",
        Some("COMMENT") => "COMMENTED",
        Some(_) => {
            return Err(payloads::unprocessable(
                REVIEW_DOC,
                &["Variable $event of type PullRequestReviewEvent was provided invalid value"],
            ));
        }
    };
    if matches!(state, "CHANGES_REQUESTED" | "COMMENTED") && text.trim().is_empty() {
        return Err(payloads::unprocessable(
            REVIEW_DOC,
            &["Review body is required for REQUEST_CHANGES and COMMENT events"],
        ));
    }
    let pull = issue.pull.as_ref().ok_or_else(payloads::not_found)?;
    if state == "PENDING"
        && pull
            .reviews
            .iter()
            .any(|r| r.state == "PENDING" && r.user.eq_ignore_ascii_case(&reviewer))
    {
        return Err(payloads::unprocessable(
            REVIEW_DOC,
            &["Review User can only have one pending review per pull request"],
        ));
    }
    let commit_id = commit_id.unwrap_or_else(|| pull.head_sha.clone());

    let id = world.next_id();
    let repo = world
        .repo_mut(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let issue = repo
        .issues
        .get_mut(&number)
        .ok_or_else(payloads::not_found)?;
    let pull = issue.pull.as_mut().ok_or_else(payloads::not_found)?;
    pull.reviews.push(Review {
        id,
        user: reviewer,
        body: text,
        state: state.to_string(),
        commit_id,
        submitted_at: (state != "PENDING").then_some(call.now),
    });
    issue.updated_at = call.now;

    let repo = find_repo(world, at)?;
    let issue = find_pull(repo, number)?;
    let review = issue
        .pull
        .as_ref()
        .and_then(|p| p.reviews.last())
        .ok_or_else(payloads::not_found)?;
    Ok(Reply::written(
        200,
        Some(call.render(world).review(repo, issue, review)),
    ))
}

/// `GET /pulls/{number}/merge`: 204 when merged, 404 when not.
pub(super) fn check_merged(world: &World, at: &RepoPath, number: u64) -> Outcome {
    let repo = find_repo(world, at)?;
    let issue = find_pull(repo, number)?;
    match &issue.pull {
        Some(pull) if pull.merged_at.is_some() => Ok(Reply::no_content()),
        _ => Err(payloads::not_found()),
    }
}

/// `PUT /pulls/{number}/merge`: moves the base branch to a new commit (a merge commit with
/// both heads as parents, or a single-parent commit for squash and rebase).
pub(super) fn merge(world: &mut World, call: &Call, at: &RepoPath, number: u64) -> Outcome {
    let body = call.object()?;
    let expected_sha = optional_string(body, "PullRequest", "sha")?;
    let commit_title = optional_string(body, "PullRequest", "commit_title")?;
    let commit_message = optional_string(body, "PullRequest", "commit_message")?;
    let method = optional_string(body, "PullRequest", "merge_method")?
        .unwrap_or_else(|| "merge".to_string());
    let merger = call.author()?;

    let repo = find_repo(world, at)?;
    let issue = find_pull(repo, number)?;
    let pull = issue.pull.as_ref().ok_or_else(payloads::not_found)?;
    if issue.state != IssueState::Open {
        return Err(payloads::error(
            405,
            "Pull Request is not mergeable",
            MERGE_DOC,
        ));
    }
    if pull.draft {
        return Err(payloads::error(
            405,
            "Pull Request is still a draft",
            MERGE_DOC,
        ));
    }
    if !matches!(method.as_str(), "merge" | "squash" | "rebase") {
        return Err(payloads::validation_failed(
            MERGE_DOC,
            vec![payloads::field_error(
                "PullRequest",
                "merge_method",
                "invalid",
            )],
        ));
    }
    if expected_sha
        .as_ref()
        .is_some_and(|sha| *sha != pull.head_sha)
    {
        return Err(payloads::error(
            409,
            "Head branch was modified. Review and try the merge again.",
            MERGE_DOC,
        ));
    }
    let base_sha = repo
        .branches
        .get(&pull.base_ref)
        .cloned()
        .ok_or_else(|| payloads::error(405, "Pull Request is not mergeable", MERGE_DOC))?;
    let head_message = repo
        .commits
        .get(&pull.head_sha)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let (title, parents) = match method.as_str() {
        "merge" => (
            commit_title.unwrap_or_else(|| {
                format!(
                    "Merge pull request #{number} from {}/{}",
                    repo.owner, pull.head_ref
                )
            }),
            vec![base_sha, pull.head_sha.clone()],
        ),
        "squash" => (
            commit_title.unwrap_or_else(|| format!("{} (#{number})", issue.title)),
            vec![base_sha],
        ),
        _ => (head_message, vec![base_sha]),
    };
    let details = commit_message.unwrap_or_else(|| match method.as_str() {
        "merge" => issue.title.clone(),
        _ => String::new(),
    });
    let message = if details.is_empty() {
        title
    } else {
        format!("{title}\n\n{details}")
    };
    let commit = Commit {
        sha: ids::random_sha(),
        tree: ids::random_sha(),
        message,
        author: GitIdentity::for_login(&merger),
        date: call.now,
        parents,
        author_login: Some(merger.clone()),
    };
    let sha = commit.sha.clone();
    let base_ref = pull.base_ref.clone();

    let repo = world
        .repo_mut(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    repo.advance_branch_as(&base_ref, commit, "pr_merge", &merger);
    repo.updated_at = call.now;
    let issue = repo
        .issues
        .get_mut(&number)
        .ok_or_else(payloads::not_found)?;
    issue.state = IssueState::Closed;
    issue.closed_at = Some(call.now);
    issue.updated_at = call.now;
    if let Some(pull) = issue.pull.as_mut() {
        pull.merged_at = Some(call.now);
        pull.merge_commit_sha = Some(sha.clone());
        pull.merged_by = Some(merger);
    }
    Ok(Reply::written(
        200,
        Some(json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"})),
    ))
}
