//! `owner/repo` references.

use crate::error::{Error, Result};
use std::fmt;

/// A repository on the configured GitHub: owner (user or organisation) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoRef {
    pub owner: String,
    pub name: String,
}

impl RepoRef {
    pub fn new(owner: impl Into<String>, name: impl Into<String>) -> Self {
        RepoRef {
            owner: owner.into(),
            name: name.into(),
        }
    }

    /// Parses `"owner/repo"`, or `"repo"` with `default_owner` (the operator's
    /// `--default-github-owner`). Names are checked against GitHub's character sets so that
    /// they can be put into URL paths as they are.
    pub fn parse(input: &str, default_owner: Option<&str>) -> Result<RepoRef> {
        let invalid = |reason| Error::InvalidRepository {
            input: input.to_string(),
            reason,
        };
        let trimmed = input.trim();
        let (owner, name) = match trimmed.split_once('/') {
            Some((owner, name)) => (owner, name),
            None => match default_owner.map(str::trim).filter(|o| !o.is_empty()) {
                Some(owner) => (owner, trimmed),
                None => {
                    return Err(invalid(
                        "expected \"owner/repo\" (no default owner is configured for \"repo\" alone)",
                    ));
                }
            },
        };
        if owner.is_empty() || owner.len() > 39 {
            return Err(invalid("the owner must have 1 to 39 characters"));
        }
        if !owner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "the owner may contain only letters, digits, '-' and '_'",
            ));
        }
        if name.is_empty() || name.len() > 100 {
            return Err(invalid("the repository name must have 1 to 100 characters"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "the repository name may contain only letters, digits, '-', '_' and '.'",
            ));
        }
        if name == "." || name == ".." {
            return Err(invalid("the repository name cannot be \".\" or \"..\""));
        }
        Ok(RepoRef::new(owner, name))
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, default owner, expected owner and name)
    type Case<'a> = (&'a str, Option<&'a str>, Option<(&'a str, &'a str)>);

    #[test]
    fn parses_owner_and_repo() {
        let cases: &[Case] = &[
            ("octo/hello-world", None, Some(("octo", "hello-world"))),
            (
                "octo/hello-world",
                Some("other"),
                Some(("octo", "hello-world")),
            ),
            ("hello-world", Some("octo"), Some(("octo", "hello-world"))),
            (" octo/hello.rs ", None, Some(("octo", "hello.rs"))),
            ("my_org/repo_1", None, Some(("my_org", "repo_1"))),
            ("hello-world", None, None),
            ("hello-world", Some(""), None),
            ("/repo", None, None),
            ("octo/", None, None),
            ("octo/a/b", None, None),
            ("octo/..", None, None),
            ("octo/re po", None, None),
            ("oc to/repo", None, None),
            ("https://github.com/octo/repo", None, None),
            ("octo/?x", None, None),
        ];
        for (input, default_owner, expected) in cases {
            let got = RepoRef::parse(input, *default_owner);
            match expected {
                Some((owner, name)) => {
                    let repo = got.unwrap_or_else(|e| panic!("{input}: {e}"));
                    assert_eq!((repo.owner.as_str(), repo.name.as_str()), (*owner, *name));
                }
                None => assert!(
                    matches!(got, Err(Error::InvalidRepository { .. })),
                    "{input:?} should be rejected, got {got:?}"
                ),
            }
        }
    }

    #[test]
    fn error_names_the_input_and_displays_owner_slash_name() {
        let err = RepoRef::parse("hello", None).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "invalid repository \"hello\": expected \"owner/repo\" (no default owner is configured for \"repo\" alone)"
            )
        );
        assert_eq!(RepoRef::new("octo", "x").to_string(), "octo/x");
    }
}
