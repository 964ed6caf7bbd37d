//! The session as its AgentSessionClass allows it (DESIGN §7.2), pure: [`effective`] checks the
//! session against the class's rules — the images, the resource ceilings, the `spec.pod` fields
//! it may set, whether it may turn isolation off — and fills in what the class decides: the
//! default image and resources, the pod placement and identity it fixes, the lifetime cap and
//! the idle timeout. The rest of `decide` and the builders then read the effective session only,
//! so no rule of the class can be forgotten by one of them.

use crate::policy::Refusal;
use ccplant_api::{
    AgentSession, AgentSessionClass, AgentSessionClassSpec, PodOverrides, builtin_class,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use std::sync::Arc;

/// The class a session resolved to: `Ok(None)` for no class (the built-in rules).
pub type ClassLookup = Result<Option<Arc<AgentSessionClass>>, Refusal>;

/// `session` as `class` allows it, or why not (a [`Refusal`] naming the class and the rule).
pub fn effective(session: &AgentSession, class: &ClassLookup) -> Result<AgentSession, Refusal> {
    let class = class.clone()?;
    let builtin;
    let (spec, name) = match &class {
        Some(c) => (&c.spec, format!("AgentSessionClass {}", c.name_any())),
        None => {
            builtin = builtin_class();
            (
                &builtin,
                "the operator's built-in class (no AgentSessionClass is named or selects this namespace)"
                    .to_string(),
            )
        }
    };
    let refuse = |rule: String| Refusal::NotAllowed(format!("{name} {rule}"));
    let mut s = session.clone();
    let agent = &mut s.spec.agent;

    // Images.
    if agent.image.is_none() {
        agent.image = spec.agent.default_image.clone();
    }
    let allowed = |image: &str| spec.agent.allows_image(image);
    let images = || {
        if spec.agent.images.is_empty() {
            "only its defaultImage".to_string()
        } else {
            spec.agent.images.join(", ")
        }
    };
    if let Some(image) = agent.image.as_deref().filter(|i| !allowed(i)) {
        return Err(refuse(format!(
            "does not allow the image {image}: its images are {}",
            images()
        )));
    }
    if let Some(image) = s
        .spec
        .editor
        .as_ref()
        .filter(|e| e.enabled)
        .and_then(|e| e.image.as_deref())
        .filter(|i| !allowed(i))
    {
        return Err(refuse(format!(
            "does not allow the editor image {image}: its images are {}",
            images()
        )));
    }

    // Resources: the session's, else the class's, else the operator's; then the ceilings.
    let agent = &mut s.spec.agent;
    let mut resources = agent
        .resources
        .clone()
        .or_else(|| spec.agent.resources.clone())
        .unwrap_or_else(ccplant_api::default_agent_resources);
    for (resource, max) in &spec.agent.max_resources {
        let limits = resources.limits.get_or_insert_default();
        let requests = resources.requests.get_or_insert_default();
        for (kind, value) in [
            ("limits", limits.get(resource)),
            ("requests", requests.get(resource)),
        ] {
            if let Some(value) = value
                && exceeds(value, max)
            {
                return Err(refuse(format!(
                    "allows at most {} of {resource}: spec.agent.resources.{kind}.{resource} is {}",
                    max.0, value.0
                )));
            }
        }
        limits
            .entry(resource.clone())
            .or_insert_with(|| max.clone());
    }
    agent.resources = Some(resources);

    // spec.pod: only the fields the class leaves to sessions; the rest is the class's.
    let overrides = s.spec.pod.as_deref().cloned().unwrap_or_default();
    if let Some(field) = overrides
        .fields_set()
        .into_iter()
        .find(|f| !spec.pod.allowed_overrides.contains(f))
    {
        let allowed: Vec<&str> = spec
            .pod
            .allowed_overrides
            .iter()
            .map(|f| f.as_str())
            .collect();
        return Err(refuse(format!(
            "does not allow spec.pod.{}: its allowedOverrides are {}",
            field.as_str(),
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    s.spec.pod = Some(Box::new(fixed_by_class(overrides, spec)));

    // Lifetime.
    if let Some(cap) = &spec.lifetime.max_duration {
        let (Ok(cap_d), Ok(asked)) = (cap.parse(), s.spec.max_duration()) else {
            return Err(refuse(format!("has an invalid lifetime.maxDuration {cap}")));
        };
        if asked > cap_d {
            s.spec.lifetime.max_duration = cap.clone();
        }
    }
    if s.spec.lifetime.idle_timeout.is_none() {
        s.spec.lifetime.idle_timeout = spec.lifetime.idle_timeout.clone();
    }

    // Isolation.
    if !s.spec.network.isolate && !spec.network.allow_isolation_off {
        return Err(refuse(
            "does not allow network.isolate: false (allowIsolationOff is not set)".to_string(),
        ));
    }
    Ok(s)
}

/// The session's allowed overrides over what the class fixes.
fn fixed_by_class(mut pod: PodOverrides, spec: &AgentSessionClassSpec) -> PodOverrides {
    let class = &spec.pod;
    if pod.node_selector.is_empty() {
        pod.node_selector = class.node_selector.clone();
    }
    if pod.tolerations.is_empty() {
        pod.tolerations = class.tolerations.clone();
    }
    if pod.image_pull_secrets.is_empty() {
        pod.image_pull_secrets = class.image_pull_secrets.clone();
    }
    pod.priority_class_name = pod
        .priority_class_name
        .or_else(|| class.priority_class_name.clone());
    pod.runtime_class_name = pod
        .runtime_class_name
        .or_else(|| class.runtime_class_name.clone());
    pod.service_account_name = pod
        .service_account_name
        .or_else(|| class.service_account_name.clone());
    pod
}

/// Whether `value` is more than `max` (a quantity that cannot be read counts as more).
fn exceeds(value: &Quantity, max: &Quantity) -> bool {
    match (milli(&value.0), milli(&max.0)) {
        (Some(v), Some(m)) => v > m,
        _ => true,
    }
}

/// A Kubernetes quantity in thousandths of its unit (rounded up), e.g. "500m" → 500,
/// "2" → 2000, "1Gi" → 1073741824000; `None` when it is not a quantity.
pub fn milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if number.is_empty() || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    let negative = int.starts_with('-');
    let int = int.trim_start_matches(['+', '-']);
    let digits = format!("{int}{frac}");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    // value = mantissa × 10^-len(frac) × multiplier; in thousandths: × 1000.
    let (num, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with(['e', 'E']) => (1, s[1..].parse().ok()?),
        _ => return None,
    };
    let exp = exp10 + 3 - i32::try_from(frac.len()).ok()?;
    let scaled = if exp >= 0 {
        mantissa
            .checked_mul(num)?
            .checked_mul(10i128.checked_pow(u32::try_from(exp).ok()?)?)?
    } else {
        let div = 10i128.checked_pow(u32::try_from(-exp).ok()?)?;
        let n = mantissa.checked_mul(num)?;
        (n + div - 1) / div
    };
    Some(if negative { -scaled } else { scaled })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn session(spec: Value) -> AgentSession {
        serde_json::from_value(json!({
            "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSession",
            "metadata": {"name": "s", "namespace": "team", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn class(spec: Value) -> ClassLookup {
        let mut full = json!({"namespaceSelector": {}});
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        Ok(Some(Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "ccplant.io/v1alpha1", "kind": "AgentSessionClass",
                "metadata": {"name": "small"}, "spec": full,
            }))
            .unwrap(),
        )))
    }

    #[test]
    fn quantities_compare_as_kubernetes_reads_them() {
        let cases = [
            ("500m", Some(500)),
            ("2", Some(2000)),
            ("1.5", Some(1500)),
            ("0.0001", Some(1)),
            ("1k", Some(1_000_000)),
            ("1Ki", Some(1_024_000)),
            ("4Gi", Some(4 * (1i128 << 30) * 1000)),
            ("1e3", Some(1_000_000)),
            ("1M", Some(1_000_000_000)),
            ("x", None),
            ("", None),
            ("1Qi", None),
        ];
        for (q, want) in cases {
            assert_eq!(milli(q), want, "{q}");
        }
        assert!(exceeds(&Quantity("2Gi".into()), &Quantity("2G".into())));
        assert!(!exceeds(&Quantity("1500m".into()), &Quantity("2".into())));
        assert!(exceeds(&Quantity("lots".into()), &Quantity("2".into())));
    }

    #[test]
    fn the_class_refuses_what_it_does_not_allow_and_names_the_rule() {
        let small = || {
            class(json!({
                "agent": {"images": ["ghcr.io/acme/*"], "defaultImage": "ghcr.io/acme/agent:1",
                          "maxResources": {"cpu": "2", "memory": "4Gi"}},
                "pod": {"allowedOverrides": ["labels", "tolerations"]},
            }))
        };
        let cases: [(&str, Value, ClassLookup, Option<&str>); 11] = [
            (
                "an allowed image",
                json!({"agent": {"image": "ghcr.io/acme/claude:2"}}),
                small(),
                None,
            ),
            ("the default image", json!({}), small(), None),
            (
                "an image outside the allowlist",
                json!({"agent": {"image": "docker.io/evil/miner"}}),
                small(),
                Some(
                    "AgentSessionClass small does not allow the image docker.io/evil/miner: its images are ghcr.io/acme/*",
                ),
            ),
            (
                "an editor image outside the allowlist",
                json!({"editor": {"enabled": true, "image": "docker.io/evil/editor"}}),
                small(),
                Some(
                    "AgentSessionClass small does not allow the editor image docker.io/evil/editor: its images are ghcr.io/acme/*",
                ),
            ),
            (
                "a limit above the ceiling",
                json!({"agent": {"resources": {"limits": {"memory": "8Gi"}}}}),
                small(),
                Some(
                    "AgentSessionClass small allows at most 4Gi of memory: spec.agent.resources.limits.memory is 8Gi",
                ),
            ),
            (
                "a request above the ceiling",
                json!({"agent": {"resources": {"requests": {"cpu": "2500m"}}}}),
                small(),
                Some(
                    "AgentSessionClass small allows at most 2 of cpu: spec.agent.resources.requests.cpu is 2500m",
                ),
            ),
            (
                "an allowed override",
                json!({"pod": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}),
                small(),
                None,
            ),
            (
                "a placement override not allowed",
                json!({"pod": {"nodeSelector": {"pool": "gpu"}}}),
                small(),
                Some(
                    "AgentSessionClass small does not allow spec.pod.nodeSelector: its allowedOverrides are labels, tolerations",
                ),
            ),
            (
                "an identity override, no class",
                json!({"pod": {"serviceAccountName": "admin"}}),
                Ok(None),
                Some(
                    "the operator's built-in class (no AgentSessionClass is named or selects this namespace) does not allow spec.pod.serviceAccountName: its allowedOverrides are labels, annotations",
                ),
            ),
            (
                "isolation off",
                json!({"network": {"isolate": false}}),
                small(),
                Some(
                    "AgentSessionClass small does not allow network.isolate: false (allowIsolationOff is not set)",
                ),
            ),
            (
                "the class is not found",
                json!({}),
                Err(Refusal::NotFound(
                    "AgentSessionClass big does not exist".into(),
                )),
                Some("AgentSessionClass big does not exist"),
            ),
        ];
        for (name, spec, class, want) in cases {
            let got = effective(&session(spec), &class);
            match (got, want) {
                (Ok(_), None) => {}
                (Err(Refusal::NotAllowed(m) | Refusal::NotFound(m)), Some(w)) => {
                    assert_eq!(m, w, "{name}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_class_fills_in_what_it_decides() {
        let big = class(json!({
            "agent": {"images": ["*"], "defaultImage": "agent:1",
                      "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}},
                      "maxResources": {"cpu": "4", "ephemeral-storage": "10Gi"}},
            "lifetime": {"maxDuration": "2h", "idleTimeout": "30m"},
            "pod": {"runtimeClassName": "gvisor", "nodeSelector": {"pool": "agents"},
                    "tolerations": [{"key": "agents", "operator": "Exists"}],
                    "priorityClassName": "low", "serviceAccountName": "agent",
                    "imagePullSecrets": [{"name": "regcred"}],
                    "allowedOverrides": ["labels", "priorityClassName"]},
            "network": {"allowIsolationOff": true},
        }));
        let s = effective(
            &session(
                json!({"lifetime": {"maxDuration": "8h"}, "network": {"isolate": false},
                            "pod": {"priorityClassName": "high", "labels": {"team": "a"}}}),
            ),
            &big,
        )
        .unwrap();
        let spec = serde_json::to_value(&s.spec).unwrap();
        assert_eq!(spec["agent"]["image"], "agent:1");
        assert_eq!(
            spec["agent"]["resources"],
            json!({"requests": {"cpu": "1"}, "limits": {"cpu": "2", "ephemeral-storage": "10Gi"}})
        );
        assert_eq!(
            spec["lifetime"],
            json!({"maxDuration": "2h", "idleTimeout": "30m"})
        );
        assert_eq!(
            spec["pod"],
            json!({"labels": {"team": "a"}, "nodeSelector": {"pool": "agents"},
                   "tolerations": [{"key": "agents", "operator": "Exists"}],
                   "priorityClassName": "high", "runtimeClassName": "gvisor",
                   "serviceAccountName": "agent", "imagePullSecrets": [{"name": "regcred"}]})
        );
        assert_eq!(spec["network"]["isolate"], false);
        // A session asking for less than the cap keeps it; its own idle timeout wins.
        let s = effective(
            &session(json!({"lifetime": {"maxDuration": "1h", "idleTimeout": "5m"}})),
            &big,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&s.spec.lifetime).unwrap(),
            json!({"maxDuration": "1h", "idleTimeout": "5m"})
        );
    }
}
