//! Issues and issue comments. On GitHub every pull request is an issue too: the issue list
//! includes PRs (with a `pull_request` key) and PRs take comments through these endpoints.

use super::{Call, RepoPath, check_body_length, optional_string};
use crate::fake_github::payloads::{self, Outcome, Reply};
use crate::fake_github::state::{AccountKind, Comment, Issue, IssueState, World};
use serde_json::{Map, Value};
use std::cmp::Ordering;

const CREATE_DOC: &str = "https://docs.github.com/rest/issues/issues#create-an-issue";
const COMMENT_DOC: &str = "https://docs.github.com/rest/issues/comments#create-an-issue-comment";

pub(super) fn create(world: &mut World, call: &Call, at: &RepoPath) -> Outcome {
    let body = call.object()?;
    let title = match body.get("title") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(payloads::validation_failed(
                CREATE_DOC,
                vec![payloads::field_error("Issue", "title", "missing_field")],
            ));
        }
    };
    if title.chars().count() > 256 {
        return Err(payloads::validation_failed(
            CREATE_DOC,
            vec![payloads::custom_error(
                "Issue",
                "title is too long (maximum is 256 characters)",
            )],
        ));
    }
    let text = optional_string(body, "Issue", "body")?;
    check_body_length("Issue", text.as_deref())?;
    let labels = label_names(body)?;
    let assignees = assignees(body)?;
    let milestone = milestone(body)?;
    let author = call.author()?;

    for login in &assignees {
        world.ensure_account(login, AccountKind::User);
    }
    let id = world.next_id();
    let label_ids: Vec<u64> = labels.iter().map(|_| world.next_id()).collect();
    let repo = world
        .repo_mut(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let labels = labels
        .iter()
        .zip(label_ids)
        .map(|(name, id)| repo.ensure_label(name, || id))
        .collect();
    let number = repo.next_number();
    repo.issues.insert(
        number,
        Issue {
            id,
            number,
            title,
            body: text,
            user: author,
            state: IssueState::Open,
            labels,
            assignees,
            milestone,
            created_at: call.now,
            updated_at: call.now,
            closed_at: None,
            comments: Vec::new(),
            pull: None,
        },
    );
    repo.updated_at = call.now;
    let repo = world
        .repo(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let issue = repo.issues.get(&number).ok_or_else(payloads::not_found)?;
    Ok(Reply::written(
        201,
        Some(call.render(world).issue(repo, issue)),
    ))
}

/// `labels`: names, or objects with a `name` (both accepted by GitHub).
fn label_names(body: &Map<String, Value>) -> Result<Vec<String>, Reply> {
    let invalid = || {
        payloads::validation_failed(
            CREATE_DOC,
            vec![payloads::field_error("Issue", "labels", "invalid")],
        )
    };
    match body.get("labels") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(name) => Ok(name.clone()),
                Value::Object(label) => label
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(invalid),
                _ => Err(invalid()),
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// `assignees` (logins) and the legacy single `assignee`.
fn assignees(body: &Map<String, Value>) -> Result<Vec<String>, Reply> {
    let invalid = || {
        payloads::validation_failed(
            CREATE_DOC,
            vec![payloads::field_error("Issue", "assignees", "invalid")],
        )
    };
    let mut logins: Vec<String> = match body.get("assignees") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(invalid))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid()),
    };
    if let Some(login) = body.get("assignee").and_then(Value::as_str)
        && !logins.iter().any(|l| l.eq_ignore_ascii_case(login))
    {
        logins.insert(0, login.to_string());
    }
    Ok(logins)
}

fn milestone(body: &Map<String, Value>) -> Result<Option<u64>, Reply> {
    match body.get("milestone") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
        Some(_) => Err(payloads::validation_failed(
            CREATE_DOC,
            vec![payloads::field_error("Issue", "milestone", "invalid")],
        )),
    }
}

/// `GET /issues`: `state` (open), `creator`, `labels`, `since` (updated at or after), `sort`
/// (created | updated | comments), `direction` (desc).
pub(super) fn list(world: &World, call: &Call, at: &RepoPath) -> Outcome {
    let repo = world
        .repo(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let state = match call.query.get("state") {
        None | Some("open") => Some(IssueState::Open),
        Some("closed") => Some(IssueState::Closed),
        Some("all") => None,
        Some(_) => return Err(super::invalid_parameter("state")),
    };
    let since = call.since()?;
    let creator = call.query.get("creator");
    let wanted_labels: Vec<String> = call
        .query
        .get("labels")
        .map(|l| l.split(',').map(|s| s.trim().to_lowercase()).collect())
        .unwrap_or_default();
    let sort = call.query.get("sort").unwrap_or("created");
    let key: fn(&Issue, &Issue) -> Ordering = match sort {
        "created" => |a, b| a.created_at.cmp(&b.created_at),
        "updated" => |a, b| a.updated_at.cmp(&b.updated_at),
        "comments" => |a, b| a.comments.len().cmp(&b.comments.len()),
        _ => return Err(super::invalid_parameter("sort")),
    };
    let descending = call.descending(true)?;

    let mut issues: Vec<&Issue> = repo
        .issues
        .values()
        .filter(|i| state.is_none_or(|s| i.state == s))
        .filter(|i| since.is_none_or(|t| i.updated_at >= t))
        .filter(|i| creator.is_none_or(|c| i.user.eq_ignore_ascii_case(c)))
        .filter(|i| {
            wanted_labels
                .iter()
                .all(|w| i.labels.iter().any(|l| l.to_lowercase() == *w))
        })
        .collect();
    issues.sort_by(|a, b| {
        let order = key(a, b).then(a.number.cmp(&b.number));
        if descending { order.reverse() } else { order }
    });
    let render = call.render(world);
    Ok(call.page(issues.into_iter().map(|i| render.issue(repo, i)).collect()))
}

pub(super) fn get(world: &World, call: &Call, at: &RepoPath, number: u64) -> Outcome {
    let repo = world
        .repo(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let issue = repo.issues.get(&number).ok_or_else(payloads::not_found)?;
    Ok(Reply::ok(call.render(world).issue(repo, issue)))
}

/// Comments in creation order (GitHub's order), `since` filtering on `updated_at`.
pub(super) fn list_comments(world: &World, call: &Call, at: &RepoPath, number: u64) -> Outcome {
    let repo = world
        .repo(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let issue = repo.issues.get(&number).ok_or_else(payloads::not_found)?;
    let since = call.since()?;
    let render = call.render(world);
    let items = issue
        .comments
        .iter()
        .filter(|c| since.is_none_or(|t| c.updated_at >= t))
        .map(|c| render.comment(repo, issue, c))
        .collect();
    Ok(call.page(items))
}

pub(super) fn create_comment(
    world: &mut World,
    call: &Call,
    at: &RepoPath,
    number: u64,
) -> Outcome {
    let body = call.object()?;
    let text = optional_string(body, "IssueComment", "body")?
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| {
            payloads::validation_failed(
                COMMENT_DOC,
                vec![payloads::field_error(
                    "IssueComment",
                    "body",
                    "missing_field",
                )],
            )
        })?;
    check_body_length("IssueComment", Some(&text))?;
    let author = call.author()?;
    let id = world.next_id();
    let repo = world
        .repo_mut(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let issue = repo
        .issues
        .get_mut(&number)
        .ok_or_else(payloads::not_found)?;
    issue.comments.push(Comment {
        id,
        body: text,
        user: author,
        created_at: call.now,
        updated_at: call.now,
    });
    issue.updated_at = call.now;

    let repo = world
        .repo(&at.owner, &at.name)
        .ok_or_else(payloads::not_found)?;
    let issue = repo.issues.get(&number).ok_or_else(payloads::not_found)?;
    let comment = issue.comments.last().ok_or_else(payloads::not_found)?;
    Ok(Reply::written(
        201,
        Some(call.render(world).comment(repo, issue, comment)),
    ))
}
