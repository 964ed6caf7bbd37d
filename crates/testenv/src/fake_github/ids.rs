//! Identifiers that look like GitHub's: commit SHAs, node ids, request ids, installation tokens.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng;
use rand::distr::Alphanumeric;

/// A random 40-hex-digit commit SHA.
pub(crate) fn random_sha() -> String {
    random_hex(40)
}

/// A GraphQL node id in GitHub's style (`PR_kwDO…`), derived from the REST id.
pub(crate) fn node_id(prefix: &str, id: u64) -> String {
    format!(
        "{prefix}_kwDO{}",
        STANDARD_NO_PAD
            .encode(id.to_be_bytes())
            .replace(['+', '/'], "x")
    )
}

/// A value for `x-github-request-id`, e.g. `C0DE:1F2A:3B4C5D:4E5F60:66A1B2C3`.
pub(crate) fn request_id() -> String {
    format!(
        "{}:{}:{}:{}:{}",
        random_hex(4),
        random_hex(4),
        random_hex(6),
        random_hex(6),
        random_hex(8)
    )
    .to_uppercase()
}

/// A new installation access token: `ghs_` and 36 alphanumeric characters, like GitHub's.
pub(crate) fn installation_token() -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(36)
        .map(char::from)
        .collect();
    format!("ghs_{suffix}")
}

fn random_hex(len: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(HEX[rng.random_range(0..HEX.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let sha = random_sha();
        assert_eq!(sha.len(), 40);
        assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(sha, random_sha());
        let token = installation_token();
        assert!(token.starts_with("ghs_") && token.len() == 40);
        assert!(node_id("PR", 7).starts_with("PR_kwDO"));
    }
}
