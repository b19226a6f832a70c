//! Password hashes: argon2id in PHC string form (`$argon2id$v=19$m=…`),
//! the only form a password is ever stored in.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The system gave no randomness for the salt.
    #[error("no randomness for the salt: {0}")]
    Random(String),
    /// The hasher refused (an empty or absurdly long password).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Hashes `password` with argon2id and a fresh random salt, at the
/// parameters OWASP recommends for argon2id (19 MiB, 2 passes, 1 lane):
/// about 20 ms on a server core, which makes guessing expensive and logins
/// cheap.
pub fn hash(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Hash(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default());
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// Checks that `phc` is an argon2id hash this broker can verify, so a
/// pasted plain password or a truncated hash is a config error at start,
/// not a user who can never log in.
pub(crate) fn check_hash(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| format!("`password` must be an argon2id hash from `halyard passwd` ({e})"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "`password` must be an argon2id hash, not {} (make one with `halyard passwd`)",
            parsed.algorithm
        ));
    }
    Params::try_from(&parsed).map_err(|e| format!("argon2id parameters out of range: {e}"))?;
    Ok(())
}

/// Whether `password` matches the PHC hash `phc` (checked at start by
/// [`check_hash`]). Slow on purpose: run it off the async threads.
pub(crate) fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        check_hash(&h).unwrap();
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "s3cret "));
        assert_ne!(hash("s3cret").unwrap(), h, "every hash has its own salt");
    }

    #[test]
    fn plain_passwords_and_other_algorithms_are_refused() {
        assert!(
            check_hash("manager")
                .unwrap_err()
                .contains("halyard passwd")
        );
        let e = check_hash("$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$AAAAAAAAAAAAAAAAAAAAAA")
            .unwrap_err();
        assert!(e.contains("argon2id"), "{e}");
        assert!(!verify("garbage", "x"));
    }
}
