//! Deterministic names of a session's children.
//!
//! A child's name is a pure function of the session's name, so a create that answers
//! AlreadyExists means "created earlier" (adopt it), never "make a second copy".
//!
//! Every name is a DNS-1035 label (at most 63 characters, lowercase letters, digits and '-',
//! starting with a letter, ending with a letter or digit): the strictest rule among the kinds
//! involved (a Service name must be one). A session name that already gives a valid label is
//! used verbatim (`fix-login` → pod `fix-login`, Secret `fix-login-github`). Any other name (too
//! long, containing '.', starting with a digit) is rewritten: '.' and other invalid characters
//! become '-', a name not starting with a letter gets the prefix `s-`, the stem is truncated,
//! and `-` plus 8 hex digits of the FNV-1a hash of the full session name are appended before
//! the suffix. The hash keeps rewritten names distinct (`a.b` and `a-b` would otherwise both
//! become `a-b`) and is the same for all children of one session.
//!
//! The value of the `ccplant.io/session` label follows the same idea: label values are at most
//! 63 characters, AgentSession names up to 253, so [`session_label_value`] is the session's name
//! when it fits and the rewritten form (the pod's name) when it does not.

/// DNS-1035 labels are at most this long.
pub const MAX_LABEL_LENGTH: usize = 63;

const SECRET_SUFFIX: &str = "-github";
const PVC_SUFFIX: &str = "-workspace";
const EDITOR_SECRET_SUFFIX: &str = "-editor";
const DIGIT_PREFIX: &str = "s-";

/// Names of the objects the operator creates for one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionNames {
    /// The session's Pod.
    pub pod: String,
    /// The Service in front of the agent API (and the editor).
    pub service: String,
    /// The Secret holding the session's GitHub token (`<name>-github`).
    pub credentials_secret: String,
    /// The workspace PersistentVolumeClaim (`<name>-workspace`).
    pub workspace_pvc: String,
    /// The Secret holding the editor's login password (`<name>-editor`).
    pub editor_secret: String,
    /// The NetworkPolicy isolating the session.
    pub network_policy: String,
    /// Value of the `ccplant.io/session` label on the children (see [`session_label_value`]).
    pub session_label: String,
}

impl SessionNames {
    /// The children's names of the session called `session_name`.
    pub fn new(session_name: &str) -> Self {
        let base = child_name(session_name, "");
        Self {
            pod: base.clone(),
            service: base.clone(),
            credentials_secret: child_name(session_name, SECRET_SUFFIX),
            workspace_pvc: child_name(session_name, PVC_SUFFIX),
            editor_secret: child_name(session_name, EDITOR_SECRET_SUFFIX),
            network_policy: base,
            session_label: session_label_value(session_name),
        }
    }

    /// The children's names of `session`.
    pub fn for_session(session: &ccplant_api::AgentSession) -> Self {
        Self::new(session.metadata.name.as_deref().unwrap_or_default())
    }
}

/// `<session_name><suffix>` when that is a valid DNS-1035 label, else the rewritten form
/// described in the module documentation. `suffix` is empty or starts with '-' and is itself
/// made of valid label characters.
fn child_name(session_name: &str, suffix: &str) -> String {
    let verbatim = format!("{session_name}{suffix}");
    if is_dns1035_label(&verbatim) {
        return verbatim;
    }
    let hash = format!("{:08x}", fnv1a_32(session_name.as_bytes()));
    let mut stem: String = session_name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    if !stem.starts_with(|c: char| c.is_ascii_lowercase()) {
        stem.insert_str(0, DIGIT_PREFIX);
    }
    // Room for the stem: the whole label minus "-<hash>" and the suffix.
    let budget = MAX_LABEL_LENGTH - (1 + hash.len()) - suffix.len();
    stem.truncate(budget); // ASCII only: byte index == char index
    let stem = stem.trim_end_matches('-');
    format!("{stem}-{hash}{suffix}")
}

/// Value of the `ccplant.io/session` label: the session's name when it is a valid label value
/// (at most 63 characters: always so for names up to 63 characters), else the session's
/// rewritten child name, which is.
pub fn session_label_value(session_name: &str) -> String {
    if is_label_value(session_name) {
        session_name.to_owned()
    } else {
        child_name(session_name, "")
    }
}

/// A non-empty label value: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LENGTH
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1035_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_LABEL_LENGTH
                && first.is_ascii_lowercase()
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// 32-bit FNV-1a: stable across builds and platforms, unlike std's `DefaultHasher`.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(name: &str) -> String {
        format!("{:08x}", fnv1a_32(name.as_bytes()))
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn short_names_are_used_verbatim() {
        assert_eq!(
            SessionNames::new("fix-login"),
            SessionNames {
                pod: "fix-login".into(),
                service: "fix-login".into(),
                credentials_secret: "fix-login-github".into(),
                workspace_pvc: "fix-login-workspace".into(),
                editor_secret: "fix-login-editor".into(),
                network_policy: "fix-login".into(),
                session_label: "fix-login".into(),
            }
        );
    }

    #[test]
    fn edge_cases_table() {
        let n63 = format!("a{}", "b".repeat(62));
        let n64 = format!("a{}", "b".repeat(63));
        let n253 = format!("a{}", "b".repeat(252));
        let n53 = format!("a{}", "b".repeat(52)); // 53 + "-workspace" = 63
        let n54 = format!("a{}", "b".repeat(53)); // 54 + "-workspace" = 64
        let dash_at_54 = format!("{}-{}", "a".repeat(53), "x".repeat(20));
        // (session name, expected pod, expected secret, expected pvc)
        let cases: Vec<(&str, String, String, String)> = vec![
            ("a", "a".into(), "a-github".into(), "a-workspace".into()),
            (
                &n63,
                n63.clone(),
                format!("{}-{}-github", &n63[..47], hash_of(&n63)),
                format!("{}-{}-workspace", &n63[..44], hash_of(&n63)),
            ),
            (
                &n64,
                format!("{}-{}", &n64[..54], hash_of(&n64)),
                format!("{}-{}-github", &n64[..47], hash_of(&n64)),
                format!("{}-{}-workspace", &n64[..44], hash_of(&n64)),
            ),
            (
                &n253,
                format!("{}-{}", &n253[..54], hash_of(&n253)),
                format!("{}-{}-github", &n253[..47], hash_of(&n253)),
                format!("{}-{}-workspace", &n253[..44], hash_of(&n253)),
            ),
            (
                &n53,
                n53.clone(),
                format!("{n53}-github"),
                format!("{n53}-workspace"),
            ),
            (
                &n54,
                n54.clone(),
                format!("{n54}-github"),
                format!("{}-{}-workspace", &n54[..44], hash_of(&n54)),
            ),
            (
                "1st-try",
                format!("s-1st-try-{}", hash_of("1st-try")),
                format!("s-1st-try-{}-github", hash_of("1st-try")),
                format!("s-1st-try-{}-workspace", hash_of("1st-try")),
            ),
            (
                "my.session",
                format!("my-session-{}", hash_of("my.session")),
                format!("my-session-{}-github", hash_of("my.session")),
                format!("my-session-{}-workspace", hash_of("my.session")),
            ),
            (
                // Truncation that would end on '-' drops it.
                &dash_at_54,
                format!("{}-{}", "a".repeat(53), hash_of(&dash_at_54)),
                format!("{}-{}-github", "a".repeat(47), hash_of(&dash_at_54)),
                format!("{}-{}-workspace", "a".repeat(44), hash_of(&dash_at_54)),
            ),
        ];
        for (session, pod, secret, pvc) in cases {
            let names = SessionNames::new(session);
            assert_eq!(names.pod, pod, "pod of {session:?}");
            assert_eq!(names.service, pod, "service of {session:?}");
            assert_eq!(names.network_policy, pod, "network policy of {session:?}");
            assert_eq!(names.credentials_secret, secret, "secret of {session:?}");
            assert_eq!(names.workspace_pvc, pvc, "pvc of {session:?}");
            for name in [&names.pod, &names.credentials_secret, &names.workspace_pvc] {
                assert!(is_dns1035_label(name), "{name:?} of {session:?}");
            }
        }
    }

    #[test]
    fn session_label_is_the_name_when_it_fits() {
        let n63 = "a".repeat(63);
        let n64 = "a".repeat(64);
        let cases = [
            ("fix-login", "fix-login".to_owned()),
            ("1st-try", "1st-try".to_owned()),
            ("my.session", "my.session".to_owned()),
            (&n63, n63.clone()),
            (&n64, format!("{}-{}", "a".repeat(54), hash_of(&n64))),
        ];
        for (session, label) in cases {
            assert_eq!(session_label_value(session), label, "{session:?}");
            assert_eq!(SessionNames::new(session).session_label, label);
            assert!(is_label_value(&label));
        }
    }

    #[test]
    fn rewritten_names_do_not_collide() {
        // Without the hash, both would become "a-b".
        assert_ne!(SessionNames::new("a.b").pod, SessionNames::new("a-b").pod);
        assert_ne!(SessionNames::new("1a").pod, SessionNames::new("s-1a").pod);
        let long = "x".repeat(100);
        let longer = "x".repeat(101);
        assert_ne!(SessionNames::new(&long), SessionNames::new(&longer));
    }

    #[test]
    fn names_are_deterministic() {
        let name = format!("{}.team", "session".repeat(20));
        assert_eq!(SessionNames::new(&name), SessionNames::new(&name));
    }

    #[test]
    fn dns1035_label_rule() {
        for ok in ["a", "a-b", "a1", &"a".repeat(63)] {
            assert!(is_dns1035_label(ok), "{ok:?}");
        }
        for bad in ["", "1a", "-a", "a-", "a.b", "A", "a_b", &"a".repeat(64)] {
            assert!(!is_dns1035_label(bad), "{bad:?}");
        }
    }
}
