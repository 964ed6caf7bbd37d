//! Every YAML file in `examples/` is made of AgentSessions and GitHubTasks that deserialize into
//! the API types, use no field the types do not know, and pass the specs' own validation.

use std::{error::Error, fs, path::PathBuf};

use ccplant_api::{AgentSession, GitHubTask};
use serde::Deserialize;
use serde_json::Value;

type TestResult = Result<(), Box<dyn Error>>;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Paths present in `original` but missing from `round_tripped`: fields the types dropped,
/// i.e. misspelt or unknown fields (the apiserver would prune them or refuse the object).
fn dropped_fields(path: &str, original: &Value, round_tripped: &Value, out: &mut Vec<String>) {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => dropped_fields(&child, value, other, out),
                    None => out.push(child),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, value) in a.iter().enumerate() {
                match b.get(i) {
                    Some(other) => dropped_fields(&format!("{path}[{i}]"), value, other, out),
                    None => out.push(format!("{path}[{i}]")),
                }
            }
        }
        _ => {}
    }
}

fn check_document(file: &str, index: usize, document: Value) -> Result<String, Box<dyn Error>> {
    let at = format!("{file} document {index}");
    let kind = document["kind"].as_str().unwrap_or_default().to_owned();
    let api_version = document["apiVersion"].as_str().unwrap_or_default();
    assert_eq!(api_version, "ccplant.io/v1alpha1", "{at}");
    assert!(
        document["metadata"].get("namespace").is_none(),
        "{at}: examples go to the current namespace"
    );
    let round_tripped = match kind.as_str() {
        "AgentSession" => {
            let session: AgentSession = serde_json::from_value(document.clone())
                .map_err(|e| format!("{at}: not an AgentSession: {e}"))?;
            session
                .spec
                .validate()
                .map_err(|e| format!("{at}: invalid AgentSession: {e}"))?;
            serde_json::to_value(&session)?
        }
        "GitHubTask" => {
            let task: GitHubTask = serde_json::from_value(document.clone())
                .map_err(|e| format!("{at}: not a GitHubTask: {e}"))?;
            task.spec
                .validate()
                .map_err(|e| format!("{at}: invalid GitHubTask: {e}"))?;
            serde_json::to_value(&task)?
        }
        other => return Err(format!("{at}: unexpected kind {other:?}").into()),
    };
    let mut dropped = Vec::new();
    dropped_fields("", &document, &round_tripped, &mut dropped);
    if !dropped.is_empty() {
        return Err(format!("{at}: unknown fields {dropped:?}").into());
    }
    let name = document["metadata"]["name"].as_str().unwrap_or_default();
    Ok(format!("{kind}/{name}"))
}

#[test]
fn every_example_is_a_valid_agent_session_or_github_task() -> TestResult {
    let mut files: Vec<PathBuf> = fs::read_dir(examples_dir())?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();

    let mut objects = Vec::new();
    for path in &files {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = fs::read_to_string(path)?;
        let mut count = 0;
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let document = Value::deserialize(document)?;
            if document.is_null() {
                continue; // an empty document, e.g. after a trailing ---
            }
            objects.push(check_document(&file, index, document)?);
            count += 1;
        }
        assert!(count > 0, "{file} holds no object");
    }
    println!(
        "{} objects in {} files: {objects:?}",
        objects.len(),
        files.len()
    );

    for expected in [
        "agentsession-bare.yaml",
        "agentsession-github-app.yaml",
        "agentsession-suspended-workspace.yaml",
        "githubtask-create-issue.yaml",
        "githubtask-create-pull-request.yaml",
        "githubtask-approve-and-merge.yaml",
        "githubtask-comment.yaml",
        "chain-issue-session-pr-merge.yaml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(expected)),
            "examples/{expected} is missing"
        );
    }
    let mut names = objects.clone();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        objects.len(),
        "two examples share a name: {objects:?}"
    );
    Ok(())
}

#[test]
fn a_misspelt_field_is_caught() -> TestResult {
    let document: Value = serde_yaml::from_str(
        "apiVersion: ccplant.io/v1alpha1\nkind: AgentSession\nmetadata: {name: x}\nspec:\n  agent: {imag: ghcr.io/ccplant/agent:latest}\n",
    )?;
    let err = check_document("inline", 0, document)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("inline document 0: unknown fields [\".spec.agent.imag\"]")
    );
    let document: Value = serde_yaml::from_str(
        "apiVersion: ccplant.io/v1alpha1\nkind: GitHubTask\nmetadata: {name: x}\nspec: {repository: a/b}\n",
    )?;
    let err = check_document("inline", 0, document)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "inline document 0: invalid GitHubTask: spec: exactly one action must be set: createIssue, createPullRequest, approveAndMerge or comment"
        )
    );
    Ok(())
}
