//! The X-Gitlab-Token check. GitLab sends the secret as is (not an HMAC), so
//! the check is an equality, done in constant time.

use subtle::ConstantTimeEq;

/// The shared secret, read once at start.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl Secret {
    /// Reads the secret from `path`; a trailing newline is not part of it.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let raw = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read the webhook secret {}: {e}", path.display()))?;
        Self::new(raw.strip_suffix(b"\n").unwrap_or(&raw).to_vec())
    }

    /// A secret from its bytes; an empty one is refused.
    pub fn new(bytes: Vec<u8>) -> anyhow::Result<Self> {
        anyhow::ensure!(!bytes.is_empty(), "the webhook secret is empty");
        Ok(Secret(bytes))
    }

    /// Whether `token` is the secret, compared in constant time.
    pub fn matches(&self, token: &[u8]) -> bool {
        // ct_eq on slices of different lengths is false without comparing contents.
        bool::from(self.0.as_slice().ct_eq(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_matches() {
        let s = Secret::new(b"s3cret".to_vec()).unwrap();
        assert!(s.matches(b"s3cret"));
        assert!(!s.matches(b"s3cre"));
        assert!(!s.matches(b"s3cret "));
        assert!(!s.matches(b""));
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert!(Secret::new(Vec::new()).is_err());
    }
}
