//! The REST endpoints: routing by (method, path segments) and shared request helpers.

mod app;
mod issues;
mod pulls;
mod repos;

use super::auth::Principal;
use super::pagination::{self, Query};
use super::payloads::{self, Outcome, Render, Reply};
use super::state::World;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::sync::LazyLock;

/// One API call as the endpoints see it (authentication and faults already handled).
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub base_url: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Query,
    pub body: Option<&'a Value>,
    pub principal: &'a Principal,
    pub now: DateTime<Utc>,
}

/// The repository a `/repos/{owner}/{repo}/…` call is about, spelled as stored.
#[derive(Debug, Clone)]
struct RepoPath {
    owner: String,
    name: String,
}

static EMPTY_OBJECT: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

impl Call<'_> {
    fn render<'w>(&'w self, world: &'w World) -> Render<'w> {
        Render {
            base: self.base_url,
            world,
        }
    }

    /// The JSON object body (an absent body reads as `{}`); anything else is GitHub's 400.
    fn object(&self) -> Result<&Map<String, Value>, Reply> {
        match self.body {
            None => Ok(&EMPTY_OBJECT),
            Some(Value::Object(map)) => Ok(map),
            Some(_) => Err(payloads::error(
                400,
                "Problems parsing JSON",
                payloads::DOCS_URL,
            )),
        }
    }

    /// The login writes are attributed to.
    fn author(&self) -> Result<String, Reply> {
        self.principal
            .login()
            .map(str::to_string)
            .ok_or_else(payloads::requires_authentication)
    }

    /// A 200 list reply: one page of `items` with the `link` header.
    fn page(&self, items: Vec<Value>) -> Reply {
        let (items, link) = pagination::paginate(items, &self.query, self.base_url, self.path);
        let reply = Reply::ok(Value::Array(items));
        match link {
            Some(link) => reply.with_header("link", link),
            None => reply,
        }
    }

    /// A `since` query parameter (ISO 8601), 422 when unparsable.
    fn since(&self) -> Result<Option<DateTime<Utc>>, Reply> {
        let Some(raw) = self.query.get("since") else {
            return Ok(None);
        };
        DateTime::parse_from_rfc3339(raw)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| invalid_parameter("since"))
    }

    /// `direction`: `asc` or `desc` (`default` when absent), 422 otherwise.
    fn descending(&self, default_descending: bool) -> Result<bool, Reply> {
        match self.query.get("direction") {
            None => Ok(default_descending),
            Some("desc") => Ok(true),
            Some("asc") => Ok(false),
            Some(_) => Err(invalid_parameter("direction")),
        }
    }
}

fn invalid_parameter(name: &str) -> Reply {
    payloads::validation_failed(
        payloads::DOCS_URL,
        vec![payloads::field_error("Query", name, "invalid")],
    )
}

/// An optional string field; other JSON types are a 422 naming the field.
fn optional_string(
    body: &Map<String, Value>,
    resource: &str,
    field: &str,
) -> Result<Option<String>, Reply> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(payloads::validation_failed(
            payloads::DOCS_URL,
            vec![payloads::field_error(resource, field, "invalid")],
        )),
    }
}

/// GitHub limits issue, comment, PR and review bodies to 65536 characters.
fn check_body_length(resource: &str, body: Option<&str>) -> Result<(), Reply> {
    match body {
        Some(text) if text.chars().count() > 65536 => Err(payloads::validation_failed(
            payloads::DOCS_URL,
            vec![payloads::custom_error(
                resource,
                "body is too long (maximum is 65536 characters)",
            )],
        )),
        _ => Ok(()),
    }
}

fn parse_number(segment: &str) -> Result<u64, Reply> {
    segment.parse().map_err(|_| payloads::not_found())
}

/// Answers one call. Every failure is a GitHub-shaped reply.
pub(crate) fn dispatch(world: &mut World, call: &Call) -> Reply {
    route(world, call).unwrap_or_else(|reply| reply)
}

fn route(world: &mut World, call: &Call) -> Outcome {
    let decoded: Vec<String> = call
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    match (call.method, segments.as_slice()) {
        ("GET", ["rate_limit"]) => app::rate_limit(world, call),
        ("GET", ["user"]) => app::current_user(world, call),
        ("GET", ["app"]) => app::get_app(world, call),
        ("GET", ["app", "installations"]) => app::list_installations(world, call),
        ("GET", ["app", "installations", id]) => app::get_installation(world, call, id),
        ("POST", ["app", "installations", id, "access_tokens"]) => {
            app::create_access_token(world, call, id)
        }
        ("DELETE", ["installation", "token"]) => app::revoke_token(world, call),
        ("GET", ["repos", owner, name, "installation"]) => {
            app::repo_installation(world, call, owner, name)
        }
        (_, ["repos", owner, name, rest @ ..]) => {
            let repo = authorize_repo(world, call, owner, name)?;
            repo_route(world, call, &repo, rest)
        }
        _ => Err(payloads::not_found()),
    }
}

/// The repository if the caller may see it; 404 otherwise, as GitHub hides private ones.
fn authorize_repo(world: &World, call: &Call, owner: &str, name: &str) -> Result<RepoPath, Reply> {
    if matches!(call.principal, Principal::App { .. }) {
        return Err(payloads::not_accessible_by_integration());
    }
    let repo = world.repo(owner, name).ok_or_else(payloads::not_found)?;
    if !call.principal.can_access_repo(&repo.owner, &repo.name) {
        return Err(payloads::not_found());
    }
    Ok(RepoPath {
        owner: repo.owner.clone(),
        name: repo.name.clone(),
    })
}

fn repo_route(world: &mut World, call: &Call, repo: &RepoPath, rest: &[&str]) -> Outcome {
    match (call.method, rest) {
        ("GET", []) => repos::get(world, call, repo),
        ("GET", ["branches"]) => repos::list_branches(world, call, repo),
        ("GET", ["activity"]) => repos::list_activity(world, call, repo),
        ("GET", ["branches", branch @ ..]) => {
            repos::get_branch(world, call, repo, &branch.join("/"))
        }
        ("GET", ["commits", reference @ ..]) if !reference.is_empty() => {
            repos::get_commit(world, call, repo, &reference.join("/"))
        }
        ("GET", ["issues"]) => issues::list(world, call, repo),
        ("POST", ["issues"]) => issues::create(world, call, repo),
        ("GET", ["issues", number]) => issues::get(world, call, repo, parse_number(number)?),
        ("GET", ["issues", number, "comments"]) => {
            issues::list_comments(world, call, repo, parse_number(number)?)
        }
        ("POST", ["issues", number, "comments"]) => {
            issues::create_comment(world, call, repo, parse_number(number)?)
        }
        ("GET", ["pulls"]) => pulls::list(world, call, repo),
        ("POST", ["pulls"]) => pulls::create(world, call, repo),
        ("GET", ["pulls", number]) => pulls::get(world, call, repo, parse_number(number)?),
        ("GET", ["pulls", number, "reviews"]) => {
            pulls::list_reviews(world, call, repo, parse_number(number)?)
        }
        ("POST", ["pulls", number, "reviews"]) => {
            pulls::create_review(world, call, repo, parse_number(number)?)
        }
        ("GET", ["pulls", number, "merge"]) => {
            pulls::check_merged(world, repo, parse_number(number)?)
        }
        ("PUT", ["pulls", number, "merge"]) => {
            pulls::merge(world, call, repo, parse_number(number)?)
        }
        _ => Err(payloads::not_found()),
    }
}

/// Decodes `%XX` escapes of a path segment (`+` stays a plus, unlike in a query).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| segment.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("feature%2Fx"), "feature/x");
        assert_eq!(percent_decode("a+b%"), "a+b%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
