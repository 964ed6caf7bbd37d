//! GitHub App endpoints (JWT-authenticated), installation tokens, `/rate_limit` and `/user`.

use super::Call;
use crate::fake_github::auth::{InstallationTokenRecord, Principal};
use crate::fake_github::ids;
use crate::fake_github::payloads::{self, Outcome, Render, Reply, timestamp};
use crate::fake_github::state::{App, World};
use serde_json::{Value, json};

const TOKEN_DOC: &str =
    "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app";

/// What an installation may do when a token asks for no particular permissions.
pub(crate) fn default_permissions() -> Value {
    json!({
        "contents": "write",
        "issues": "write",
        "metadata": "read",
        "pull_requests": "write",
    })
}

/// The App authenticated by the call's JWT; every other credential gets GitHub's JWT error.
fn calling_app<'w>(world: &'w World, call: &Call) -> Result<&'w App, Reply> {
    match call.principal {
        Principal::App { app_id } => world.apps.get(app_id).ok_or_else(payloads::jwt_required),
        _ => Err(payloads::jwt_required()),
    }
}

fn installation_json(render: &Render, app: &App, installation_id: u64, account: &str) -> Value {
    let base = render.base;
    let target = render.world.account(account);
    json!({
        "id": installation_id,
        "account": render.account(&target),
        "access_tokens_url": format!("{base}/app/installations/{installation_id}/access_tokens"),
        "repositories_url": format!("{base}/installation/repositories"),
        "html_url": format!("{base}/organizations/{account}/settings/installations/{installation_id}"),
        "app_id": app.id,
        "app_slug": app.slug,
        "target_id": target.id,
        "target_type": target.kind.as_str(),
        "permissions": default_permissions(),
        "events": [],
        "created_at": timestamp(app.created_at),
        "updated_at": timestamp(app.created_at),
        "single_file_name": null,
        "repository_selection": "all",
    })
}

pub(super) fn get_app(world: &World, call: &Call) -> Outcome {
    let app = calling_app(world, call)?;
    let render = call.render(world);
    let owner = app
        .installations
        .values()
        .next()
        .map_or(Value::Null, |account| render.user(account));
    Ok(Reply::ok(json!({
        "id": app.id,
        "slug": app.slug,
        "node_id": ids::node_id("A", app.id),
        "owner": owner,
        "name": app.slug,
        "description": "",
        "external_url": call.base_url,
        "html_url": format!("{}/apps/{}", call.base_url, app.slug),
        "created_at": timestamp(app.created_at),
        "updated_at": timestamp(app.created_at),
        "permissions": default_permissions(),
        "events": [],
        "installations_count": app.installations.len(),
    })))
}

pub(super) fn list_installations(world: &World, call: &Call) -> Outcome {
    let app = calling_app(world, call)?;
    let render = call.render(world);
    let items = app
        .installations
        .iter()
        .map(|(id, account)| installation_json(&render, app, *id, account))
        .collect();
    Ok(call.page(items))
}

pub(super) fn get_installation(world: &World, call: &Call, id: &str) -> Outcome {
    let app = calling_app(world, call)?;
    let (id, account) = id
        .parse::<u64>()
        .ok()
        .and_then(|id| app.installations.get_key_value(&id))
        .ok_or_else(payloads::not_found)?;
    Ok(Reply::ok(installation_json(
        &call.render(world),
        app,
        *id,
        account,
    )))
}

/// `GET /repos/{owner}/{repo}/installation`: the calling App's installation on the owner.
pub(super) fn repo_installation(world: &World, call: &Call, owner: &str, name: &str) -> Outcome {
    let app = calling_app(world, call)?;
    let repo = world.repo(owner, name).ok_or_else(payloads::not_found)?;
    let (id, account) = app
        .installations
        .iter()
        .find(|(_, account)| account.eq_ignore_ascii_case(&repo.owner))
        .ok_or_else(payloads::not_found)?;
    Ok(Reply::ok(installation_json(
        &call.render(world),
        app,
        *id,
        account,
    )))
}

/// `POST /app/installations/{id}/access_tokens` with optional `repositories` (names),
/// `repository_ids` and `permissions`. Empty lists mean "no restriction".
pub(super) fn create_access_token(world: &mut World, call: &Call, id: &str) -> Outcome {
    let app = calling_app(world, call)?;
    let (installation_id, account) = id
        .parse::<u64>()
        .ok()
        .and_then(|id| app.installations.get_key_value(&id))
        .map(|(id, account)| (*id, account.clone()))
        .ok_or_else(payloads::not_found)?;
    let body = call.object()?;
    let invalid = |field: &str| {
        payloads::validation_failed(
            TOKEN_DOC,
            vec![payloads::field_error("InstallationToken", field, "invalid")],
        )
    };
    let inaccessible = || {
        payloads::error(
            422,
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
            TOKEN_DOC,
        )
    };
    let mut names: Vec<String> = Vec::new();
    match body.get("repositories") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let requested = item.as_str().ok_or_else(|| invalid("repositories"))?;
                let repo = world.repo(&account, requested).ok_or_else(inaccessible)?;
                names.push(repo.name.clone());
            }
        }
        Some(_) => return Err(invalid("repositories")),
    }
    match body.get("repository_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let requested = item.as_u64().ok_or_else(|| invalid("repository_ids"))?;
                let repo = world
                    .repos
                    .values()
                    .find(|r| r.id == requested && r.owner.eq_ignore_ascii_case(&account))
                    .ok_or_else(inaccessible)?;
                names.push(repo.name.clone());
            }
        }
        Some(_) => return Err(invalid("repository_ids")),
    }
    names.dedup();
    let permissions = match body.get("permissions") {
        None | Some(Value::Null) => default_permissions(),
        Some(Value::Object(map)) if map.is_empty() => default_permissions(),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(invalid("permissions")),
    };
    let repositories = (!names.is_empty()).then_some(names);
    let ttl = chrono::TimeDelta::from_std(world.installation_token_ttl)
        .unwrap_or(chrono::TimeDelta::hours(1));
    let record = InstallationTokenRecord {
        token: ids::installation_token(),
        installation_id,
        repositories: repositories.clone(),
        permissions: permissions.clone(),
        // Not truncated to seconds: short test TTLs must expire when they say.
        expires_at: chrono::Utc::now() + ttl,
        revoked: false,
    };
    let mut response = json!({
        "token": record.token,
        "expires_at": timestamp(record.expires_at),
        "permissions": permissions,
        "repository_selection": if repositories.is_some() { "selected" } else { "all" },
    });
    if let (Some(names), Some(object)) = (&repositories, response.as_object_mut()) {
        let render = call.render(world);
        let repos = names
            .iter()
            .filter_map(|name| world.repo(&account, name))
            .map(|repo| render.repo(repo))
            .collect();
        object.insert("repositories".to_string(), Value::Array(repos));
    }
    world.installation_tokens.push(record);
    Ok(Reply::written(201, Some(response)))
}

/// `DELETE /installation/token`: revokes the installation token the call is made with.
pub(super) fn revoke_token(world: &mut World, call: &Call) -> Outcome {
    let token = match call.principal {
        Principal::Installation { token, .. } => token,
        Principal::Anonymous => return Err(payloads::requires_authentication()),
        Principal::User { .. } => {
            return Err(payloads::error(
                403,
                "Resource not accessible by personal access token",
                payloads::DOCS_URL,
            ));
        }
        Principal::App { .. } => return Err(payloads::not_accessible_by_integration()),
    };
    for record in world
        .installation_tokens
        .iter_mut()
        .filter(|r| r.token == *token)
    {
        record.revoked = true;
    }
    Ok(Reply::written(204, None))
}

/// `GET /rate_limit` (free of charge, like on GitHub).
pub(super) fn rate_limit(world: &mut World, call: &Call) -> Outcome {
    let limit = call
        .principal
        .rate_limit(world.rate_limits.authenticated_limit);
    let core = world
        .rate_limits
        .status(&call.principal.rate_bucket(), limit, call.now);
    let core = json!({
        "limit": core.limit,
        "used": core.used,
        "remaining": core.remaining(),
        "reset": core.reset,
        "resource": "core",
    });
    let fresh = |limit: u32, resource: &str| json!({"limit": limit, "used": 0, "remaining": limit, "reset": call.now.timestamp() + 3600, "resource": resource});
    Ok(Reply::ok(json!({
        "resources": {
            "core": core,
            "search": fresh(30, "search"),
            "graphql": fresh(5000, "graphql"),
            "integration_manifest": fresh(5000, "integration_manifest"),
        },
        "rate": core,
    })))
}

/// `GET /user`: the token's user. Installation tokens are not users.
pub(super) fn current_user(world: &World, call: &Call) -> Outcome {
    match call.principal {
        Principal::User { login } => Ok(Reply::ok(call.render(world).user(login))),
        Principal::Anonymous => Err(payloads::requires_authentication()),
        Principal::App { .. } | Principal::Installation { .. } => {
            Err(payloads::not_accessible_by_integration())
        }
    }
}
