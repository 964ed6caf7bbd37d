//! Properties of the generated CRDs that users and tools rely on.

use std::{collections::BTreeSet, error::Error};

use ccplant_api::{
    DEFAULT_AGENT_PORT, DEFAULT_EDITOR_PORT, DEFAULT_MAX_ATTEMPTS, DEFAULT_METRICS_PORT,
    DEFAULT_RUN_AS_USER, crds,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn Error>>;

/// kubectl's client-side apply stores the whole object in this annotation; the apiserver
/// refuses annotations larger than 256 KiB in total.
const LAST_APPLIED_LIMIT: usize = 256 * 1024;

fn schema(crd: &CustomResourceDefinition) -> Result<Value, Box<dyn Error>> {
    let version = crd.spec.versions.first().ok_or("no version")?;
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or("no openAPIV3Schema")?;
    Ok(serde_json::to_value(schema)?)
}

fn crd_named<'a>(
    crds: &'a [CustomResourceDefinition],
    name: &str,
) -> Result<&'a CustomResourceDefinition, Box<dyn Error>> {
    crds.iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| format!("no CRD {name}").into())
}

/// The schema at a dotted path such as `spec.agent.port`; `[*]` steps into list items and
/// `{}` into map values.
fn at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = schema;
    // A filter such as `[?(@.type=="Ready")]` selects items, like `[*]`.
    let path = match (path.find("[?("), path.find(")]")) {
        (Some(start), Some(end)) if start < end => {
            format!("{}[*]{}", &path[..start], &path[end + 2..])
        }
        _ => path.to_string(),
    };
    for segment in path.split('.') {
        let (name, items) = match segment.strip_suffix("[*]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        node = if name == "{}" {
            node.get("additionalProperties")?
        } else {
            node.get("properties")?.get(name)?
        };
        if items {
            node = node.get("items")?;
        }
    }
    Some(node)
}

/// Calls `visit(path, schema)` for every node of the schema.
fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, child) in properties {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk(&child_path, child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[*]"), items, visit);
    }
    if let Some(values @ Value::Object(_)) = node.get("additionalProperties") {
        walk(&format!("{path}.{{}}"), values, visit);
    }
}

#[test]
fn both_crds_are_namespaced_with_short_names_category_and_status() -> TestResult {
    let crds = crds();
    let summary: Vec<Value> = crds
        .iter()
        .map(|crd| {
            let v = crd.spec.versions.first();
            json!({
                "name": crd.metadata.name,
                "group": crd.spec.group,
                "kind": crd.spec.names.kind,
                "scope": crd.spec.scope,
                "shortNames": crd.spec.names.short_names,
                "categories": crd.spec.names.categories,
                "version": v.map(|v| v.name.clone()),
                "served": v.map(|v| v.served),
                "storage": v.map(|v| v.storage),
                "status": v.and_then(|v| v.subresources.as_ref()).map(|s| s.status.is_some()),
            })
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!({"name": "agentsessions.ccplant.io", "group": "ccplant.io", "kind": "AgentSession",
                   "scope": "Namespaced", "shortNames": ["ags"], "categories": ["ccplant"],
                   "version": "v1alpha1", "served": true, "storage": true, "status": true}),
            json!({"name": "githubtasks.ccplant.io", "group": "ccplant.io", "kind": "GitHubTask",
                   "scope": "Namespaced", "shortNames": ["ght"], "categories": ["ccplant"],
                   "version": "v1alpha1", "served": true, "storage": true, "status": true}),
            json!({"name": "githubcredentials.ccplant.io", "group": "ccplant.io", "kind": "GitHubCredential",
                   "scope": "Cluster", "shortNames": ["ghc"], "categories": ["ccplant"],
                   "version": "v1alpha1", "served": true, "storage": true, "status": true}),
            json!({"name": "agentsessionclasses.ccplant.io", "group": "ccplant.io", "kind": "AgentSessionClass",
                "scope": "Cluster", "shortNames": ["agsc"], "categories": ["ccplant"],
                "version": "v1alpha1", "served": true, "storage": true, "status": null}),
        ]
    );
    Ok(())
}

#[test]
fn compact_json_fits_the_last_applied_annotation() -> TestResult {
    for crd in crds() {
        let size = serde_json::to_vec(&crd)?.len();
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        println!(
            "{name}: {size} bytes of compact JSON ({:.0}% of the {LAST_APPLIED_LIMIT}-byte limit)",
            size as f64 * 100.0 / LAST_APPLIED_LIMIT as f64
        );
        assert!(
            size < LAST_APPLIED_LIMIT,
            "{name} is {size} bytes: kubectl apply (client-side) would fail"
        );
    }
    Ok(())
}

#[test]
fn every_property_has_a_description() -> TestResult {
    let mut missing = Vec::new();
    let mut checked = BTreeSet::new();
    for crd in crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema(&crd)?;
        if schema
            .get("description")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            missing.push(kind.clone());
        }
        walk("", &schema, &mut |path, node| {
            if let Some(Value::Object(properties)) = node.get("properties") {
                for (name, property) in properties {
                    checked.insert(format!("{kind} {path}.{name}"));
                    let described = property
                        .get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| !d.trim().is_empty());
                    if !described {
                        missing.push(format!("{kind} {path}.{name}"));
                    }
                }
            }
        });
    }
    println!("{} properties checked", checked.len());
    for deep in [
        "AgentSession spec.agent.env[*].valueFrom.secretKeyRef.name",
        "AgentSession spec.pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[*].matchExpressions[*].key",
        "AgentSession status.conditions[*].lastTransitionTime",
        "GitHubTask spec.github.secretRef.name",
        "GitHubTask status.result.mergeCommitSHA",
    ] {
        assert!(checked.contains(deep), "the walk must reach {deep}");
    }
    assert!(
        missing.is_empty(),
        "properties without description: {missing:#?}"
    );
    Ok(())
}

#[test]
fn printer_columns_point_at_fields_in_the_schema() -> TestResult {
    // The apiserver always sets these metadata fields; the CRD schema leaves metadata opaque.
    let metadata = [".metadata.name", ".metadata.creationTimestamp"];
    let crds = crds();
    let mut columns = Vec::new();
    for crd in &crds {
        let schema = schema(crd)?;
        let version = crd.spec.versions.first().ok_or("no version")?;
        for column in version.additional_printer_columns.iter().flatten() {
            let path = &column.json_path;
            let found = metadata.contains(&path.as_str())
                || path
                    .strip_prefix('.')
                    .and_then(|p| at(&schema, p))
                    .is_some();
            assert!(
                found,
                "{}: column {} points at {path}, which does not exist",
                crd.spec.names.kind, column.name
            );
            columns.push(format!("{}/{}={path}", crd.spec.names.kind, column.name));
        }
    }
    assert_eq!(
        columns,
        [
            "AgentSession/Phase=.status.phase",
            "AgentSession/Agent=.spec.agent.type",
            "AgentSession/Repository=.spec.repository.name",
            "AgentSession/Agent State=.status.agent.state",
            "AgentSession/Endpoint=.status.endpoint",
            "AgentSession/Expires=.status.expiresAt",
            "AgentSession/Age=.metadata.creationTimestamp",
            "GitHubTask/Action=.status.action",
            "GitHubTask/Repository=.spec.repository",
            "GitHubTask/Phase=.status.phase",
            "GitHubTask/Result=.status.result.url",
            "GitHubTask/Age=.metadata.creationTimestamp",
            "GitHubCredential/Default=.spec.default",
            "GitHubCredential/Ready=.status.conditions[?(@.type==\"Ready\")].status",
            "GitHubCredential/Identity=.status.identity.login",
            "GitHubCredential/Rate Limit=.status.rateLimitRemaining",
            "GitHubCredential/Age=.metadata.creationTimestamp",
            "AgentSessionClass/Default=.spec.default",
            "AgentSessionClass/Max Active=.spec.limits.maxActiveSessionsPerNamespace",
            "AgentSessionClass/Max Duration=.spec.lifetime.maxDuration",
            "AgentSessionClass/Age=.metadata.creationTimestamp",
        ]
    );
    let endpoint = crds
        .first()
        .and_then(|c| c.spec.versions.first())
        .and_then(|v| v.additional_printer_columns.as_ref())
        .and_then(|cols| cols.iter().find(|c| c.name == "Endpoint"))
        .and_then(|c| c.priority);
    assert_eq!(endpoint, Some(1), "Endpoint only shows with -o wide");
    // kubectl renders a future time in a "date" column as <invalid>.
    let expires = crds
        .first()
        .and_then(|c| c.spec.versions.first())
        .and_then(|v| v.additional_printer_columns.as_ref())
        .and_then(|cols| cols.iter().find(|c| c.name == "Expires"))
        .map(|c| c.type_.clone());
    assert_eq!(expires.as_deref(), Some("string"));
    Ok(())
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() -> TestResult {
    // Every kind with a status (an AgentSessionClass has none: nothing reconciles it).
    for crd in crds()
        .into_iter()
        .filter(|c| c.spec.names.kind != "AgentSessionClass")
    {
        let schema = schema(&crd)?;
        let conditions = at(&schema, "status.conditions").ok_or("no status.conditions")?;
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
        let required = &conditions["items"]["required"];
        for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
            assert!(
                required
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(field))),
                "{field}"
            );
        }
    }
    Ok(())
}

#[test]
fn schema_defaults_match_the_rust_defaults() -> TestResult {
    let crds = crds();
    let session = schema(crd_named(&crds, "agentsessions.ccplant.io")?)?;
    let task = schema(crd_named(&crds, "githubtasks.ccplant.io")?)?;
    let expected = [
        (
            &session,
            "spec.agent",
            json!({"type": "claude", "port": DEFAULT_AGENT_PORT}),
        ),
        (&session, "spec.agent.type", json!("claude")),
        (&session, "spec.agent.port", json!(DEFAULT_AGENT_PORT)),
        (
            &session,
            "spec.completion",
            json!({"mode": "Manual", "idleFor": "60s"}),
        ),
        (&session, "spec.lifetime", json!({"maxDuration": "24h"})),
        (&session, "spec.lifetime.maxDuration", json!("24h")),
        (&session, "spec.network", json!({"isolate": true})),
        (&session, "spec.suspend", json!(false)),
        (&session, "spec.editor.port", json!(DEFAULT_EDITOR_PORT)),
        (&session, "spec.editor.enabled", json!(false)),
        (
            &session,
            "spec.telemetry.metricsPort",
            json!(DEFAULT_METRICS_PORT),
        ),
        (
            &session,
            "spec.pod.securityContext.runAsUser",
            json!(DEFAULT_RUN_AS_USER),
        ),
        (
            &session,
            "spec.github.permissions",
            json!({"contents": "write", "issues": "write", "pull_requests": "write"}),
        ),
        (
            &task,
            "spec.retry",
            json!({"maxAttempts": DEFAULT_MAX_ATTEMPTS, "backoff": "10s"}),
        ),
        (&task, "spec.approveAndMerge.approve", json!(true)),
        (&task, "spec.approveAndMerge.reviewComment", json!("LGTM")),
        (&task, "spec.approveAndMerge.mergeMethod", json!("merge")),
        (&task, "spec.createPullRequest.draft", json!(false)),
    ];
    for (schema, path, default) in expected {
        let node = at(schema, path).ok_or_else(|| format!("no {path}"))?;
        assert_eq!(node.get("default"), Some(&default), "{path}");
    }
    Ok(())
}

#[test]
fn cel_validated_strings_have_max_length_and_lists_have_max_items() -> TestResult {
    let mut problems = Vec::new();
    for crd in crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema(&crd)?;
        walk("", &schema, &mut |path, node| {
            let is_string = node.get("type") == Some(&json!("string"));
            let has_rules = node.get("x-kubernetes-validations").is_some();
            if is_string && has_rules && node.get("maxLength").is_none() {
                problems.push(format!(
                    "{kind} {path}: CEL-validated string without maxLength"
                ));
            }
            // Lists inside k8s-openapi types (env[*].valueFrom…, affinity…) are theirs.
            let ours =
                !path.contains("[*]") && !path.contains("affinity") && !path.contains("resources");
            if ours && node.get("type") == Some(&json!("array")) && node.get("maxItems").is_none() {
                problems.push(format!("{kind} {path}: list without maxItems"));
            }
        });
    }
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

/// Rows of the validation table in the crate documentation: (kind, field, check, message).
fn documented_rules() -> Vec<(String, String, String, String)> {
    include_str!("../src/lib.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | "))
        .filter(|row| !row.starts_with("Kind") && !row.starts_with('-'))
        .filter_map(|row| {
            let cells: Vec<&str> = row.trim_end_matches(" |").split(" | ").collect();
            let unquote = |s: &str| s.trim().trim_matches('`').to_owned();
            match cells.as_slice() {
                [kind, field, check, message] => Some((
                    unquote(kind),
                    unquote(field),
                    unquote(check),
                    unquote(message),
                )),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn the_documented_cel_rules_are_exactly_the_ones_in_the_schemas() -> TestResult {
    let documented: BTreeSet<(String, String, String)> = documented_rules()
        .into_iter()
        .filter(|(_, _, check, _)| check.starts_with("CEL"))
        .map(|(kind, field, _, message)| (kind, field, message))
        .collect();
    assert!(documented.len() > 20, "table not found: {documented:#?}");

    let mut in_schemas = BTreeSet::new();
    for crd in crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema(&crd)?;
        walk("", &schema, &mut |path, node| {
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let message = rule["message"]
                    .as_str()
                    .unwrap_or("<no message>")
                    .to_owned();
                in_schemas.insert((kind.clone(), path.to_owned(), message));
            }
        });
    }
    let undocumented: Vec<_> = in_schemas.difference(&documented).collect();
    let absent: Vec<_> = documented.difference(&in_schemas).collect();
    assert!(
        undocumented.is_empty(),
        "rules missing from the lib.rs table: {undocumented:#?}"
    );
    assert!(
        absent.is_empty(),
        "documented rules not in the schemas: {absent:#?}"
    );
    Ok(())
}

#[test]
fn the_documented_schema_checks_exist() -> TestResult {
    let crds = crds();
    for (kind, field, check, _) in documented_rules() {
        if check.starts_with("CEL") {
            continue;
        }
        let crd = crd_named(&crds, &format!("{}s.ccplant.io", kind.to_lowercase()))?;
        let schema = schema(crd)?;
        let path = field.replace("[<i>]", "[*]").replace(".<name>", ".{}");
        let node = at(&schema, &path).ok_or_else(|| format!("{kind}: no field {path}"))?;
        let keyword = match check.as_str() {
            "enum" => "enum",
            c if c.starts_with("at most") => "maxItems",
            c if c.starts_with("required") || c == "required" => {
                let (parent, name) = path.rsplit_once('.').unwrap_or(("", &path));
                let parent = if parent.is_empty() {
                    Some(&schema)
                } else {
                    at(&schema, parent)
                };
                let required = parent
                    .and_then(|p| p.get("required"))
                    .and_then(Value::as_array);
                assert!(
                    required.is_some_and(|r| r.contains(&json!(name))),
                    "{kind} {path} is documented as required"
                );
                continue;
            }
            c if c.contains("chars") => "maxLength",
            c if c.starts_with(">=") => "minimum",
            c if c.contains("..=") => "maximum",
            other => return Err(format!("unknown check {other:?}").into()),
        };
        assert!(node.get(keyword).is_some(), "{kind} {path}: no {keyword}");
    }
    Ok(())
}
