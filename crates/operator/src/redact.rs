//! Redaction of GitHub-token-shaped strings (DESIGN §7.3): text the operator copies from an
//! agent or from GitHub into status, Events or logs never carries a credential.
//!
//! A token is a known prefix followed by a run of at least [`MIN_BODY`] body characters:
//! `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` with `[A-Za-z0-9]` (real ones have 36), and
//! `github_pat_` with `[A-Za-z0-9_]` (real ones have 82). The whole run is replaced and the
//! prefix kept (`ghp_[REDACTED]`), so a reader still knows what kind of credential was there.
//!
//! Boundaries: the body is taken greedily to its end, so a token never leaves a tail. The
//! *start* needs no word boundary on purpose: the bytes in front of a token are alphanumeric
//! more often than one would think — JSON and `Debug` escapes (`\nghp_…`, `\tghp_…`) and
//! percent-encoding (`user%3Aghp_…@github.com`) — and a boundary rule would let exactly those
//! through. Masking the rare identifier that merely ends in `ghp_` costs nothing.
//!
//! Scanning is byte-wise over ASCII only, so it works on log bytes as well as on `str`, and a
//! text without a token comes back borrowed (no allocation in the common case).

use std::borrow::Cow;

/// Least body length of a token-shaped string (real tokens are longer).
pub const MIN_BODY: usize = 20;

/// What replaces a token's body.
pub const REDACTED: &str = "[REDACTED]";

/// The prefixes and whether their body may contain `_`.
const PREFIXES: [(&[u8], bool); 6] = [
    (b"ghp_", false),
    (b"gho_", false),
    (b"ghu_", false),
    (b"ghs_", false),
    (b"ghr_", false),
    (b"github_pat_", true),
];

/// `text` with every GitHub-token-shaped string replaced by its prefix and `[REDACTED]`;
/// borrowed when there was none.
pub fn tokens(text: &str) -> Cow<'_, str> {
    let mut found = Tokens::new(text.as_bytes()).peekable();
    if found.peek().is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for t in found {
        // Every index is that of an ASCII byte, hence a char boundary.
        out.push_str(&text[copied..t.body]);
        out.push_str(REDACTED);
        copied = t.end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// [`tokens`] over bytes (formatted log lines; need not be UTF-8).
pub fn token_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut found = Tokens::new(bytes).peekable();
    if found.peek().is_none() {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut copied = 0;
    for t in found {
        out.extend_from_slice(&bytes[copied..t.body]);
        out.extend_from_slice(REDACTED.as_bytes());
        copied = t.end;
    }
    out.extend_from_slice(&bytes[copied..]);
    Cow::Owned(out)
}

/// [`tokens`] for an owned string: the same string back when there was no token.
pub fn owned(text: String) -> String {
    match tokens(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(redacted) => redacted,
    }
}

/// One token found: where its body starts and where it ends.
struct Found {
    body: usize,
    end: usize,
}

/// The tokens of `bytes`, in order, not overlapping.
struct Tokens<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Tokens<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }
}

impl Iterator for Tokens<'_> {
    type Item = Found;

    fn next(&mut self) -> Option<Found> {
        let bytes = self.bytes;
        while let Some(offset) = bytes.get(self.at..)?.iter().position(|b| *b == b'g') {
            let start = self.at + offset;
            self.at = start + 1;
            let rest = &bytes[start..];
            for (prefix, underscore) in PREFIXES {
                if !rest.starts_with(prefix) {
                    continue;
                }
                let body = start + prefix.len();
                let len = bytes[body..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || (underscore && **b == b'_'))
                    .count();
                if len >= MIN_BODY {
                    self.at = body + len;
                    return Some(Found {
                        body,
                        end: body + len,
                    });
                }
            }
        }
        self.at = bytes.len();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY36: &str = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";

    #[test]
    fn token_shaped_strings_are_replaced_and_their_prefix_kept() {
        let pat = format!("github_pat_11ABCDEFG0123456789abc_{}", "x".repeat(59));
        let cases: Vec<(String, String)> = vec![
            // Nothing to do.
            ("".into(), "".into()),
            ("no token here".into(), "no token here".into()),
            ("ghp_".into(), "ghp_".into()),
            // Every prefix.
            (format!("ghp_{BODY36}"), "ghp_[REDACTED]".into()),
            (format!("gho_{BODY36}"), "gho_[REDACTED]".into()),
            (format!("ghu_{BODY36}"), "ghu_[REDACTED]".into()),
            (format!("ghs_{BODY36}"), "ghs_[REDACTED]".into()),
            (format!("ghr_{BODY36}"), "ghr_[REDACTED]".into()),
            (pat.clone(), "github_pat_[REDACTED]".into()),
            // In a sentence, twice, with multi-byte text around.
            (
                format!("here: ghp_{BODY36}, and é gho_{BODY36}."),
                "here: ghp_[REDACTED], and é gho_[REDACTED].".into(),
            ),
            // Body length: 19 is not a token, 20 is.
            (
                format!("ghp_{}", &BODY36[..19]),
                format!("ghp_{}", &BODY36[..19]),
            ),
            (format!("ghp_{}", &BODY36[..20]), "ghp_[REDACTED]".into()),
            // The body ends at the first character outside its set; `_` ends a ghp_ body but
            // not a github_pat_ one.
            (format!("ghp_{BODY36}_tail"), "ghp_[REDACTED]_tail".into()),
            (format!("{pat}-tail"), "github_pat_[REDACTED]-tail".into()),
            (format!("ghp_{BODY36}\"}}"), "ghp_[REDACTED]\"}".into()),
            // No word boundary needed in front: escapes and percent-encoding glue a letter or
            // digit to the token.
            (
                format!("line one\\nghp_{BODY36}"),
                "line one\\nghp_[REDACTED]".into(),
            ),
            (
                format!("https://x-access-token%3Aghs_{BODY36}%40github.com"),
                "https://x-access-token%3Aghs_[REDACTED]%40github.com".into(),
            ),
            // Overlapping starts: the first real one wins.
            (format!("ghp_ghp_{BODY36}"), "ghp_ghp_[REDACTED]".into()),
            (format!("gggho_{BODY36}"), "gggho_[REDACTED]".into()),
            // Case matters (GitHub's prefixes are lower case); other prefixes are left alone.
            (format!("GHP_{BODY36}"), format!("GHP_{BODY36}")),
            (format!("ghx_{BODY36}"), format!("ghx_{BODY36}")),
            // Already redacted: unchanged.
            ("ghp_[REDACTED]".into(), "ghp_[REDACTED]".into()),
        ];
        for (input, want) in &cases {
            assert_eq!(tokens(input), want.as_str(), "input {input:?}");
            assert_eq!(
                token_bytes(input.as_bytes()),
                want.as_bytes(),
                "bytes {input:?}"
            );
            assert_eq!(owned(input.clone()), *want);
        }
    }

    #[test]
    fn text_without_a_token_is_borrowed() {
        let text = format!("gh ghp_ ghp_short github_pat_ {}", &BODY36[..19]);
        assert!(matches!(tokens(&text), Cow::Borrowed(_)));
        assert!(matches!(token_bytes(text.as_bytes()), Cow::Borrowed(_)));
        assert!(matches!(tokens(&format!("ghp_{BODY36}")), Cow::Owned(_)));
    }

    #[test]
    fn bytes_need_not_be_utf8() {
        let mut input = vec![0xff, 0xfe];
        input.extend_from_slice(format!("ghp_{BODY36}").as_bytes());
        input.push(0x80);
        let mut want = vec![0xff, 0xfe];
        want.extend_from_slice(b"ghp_[REDACTED]");
        want.push(0x80);
        assert_eq!(token_bytes(&input).as_ref(), want.as_slice());
    }
}
