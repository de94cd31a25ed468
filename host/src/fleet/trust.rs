//! Is this the component that was asked for, made by someone we trust? The SHA-256 pins the
//! bytes; an ed25519 signature over the same bytes, checked against keys of the local
//! configuration only, says who made them.

use super::config::{RemoteConfig, SignatureConfig};
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// Why a component is not the one we may run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// Other bytes than the pinned digest.
    #[error("sha256 mismatch: expected {expected}, the component is {found}")]
    Digest {
        /// The pinned digest.
        expected: String,
        /// The component's digest.
        found: String,
    },
    /// From a URL without a signature, and unsigned plugins are not allowed.
    #[error(
        "unsigned: a plugin from a URL must be signed by a key of the local [remote] signing_keys (or the local configuration must set allow_unsigned)"
    )]
    Unsigned,
    #[error(
        "signed with key `{key}`, which the local configuration does not trust (trusted: {trusted})"
    )]
    /// Signed with a key the local file does not list.
    UntrustedKey {
        /// The key the signature names.
        key: String,
        /// The keys the local file trusts.
        trusted: String,
    },
    /// The signature does not match the bytes.
    #[error("the signature is not valid for these bytes with key `{key}`")]
    BadSignature {
        /// The key it was checked with.
        key: String,
    },
    /// Not base64 of 64 bytes.
    #[error("the signature is malformed: {0}")]
    Malformed(String),
}

/// The checks a component passes before it is compiled.
pub struct Trust<'a> {
    /// The keys and rules of the local file.
    pub remote: &'a RemoteConfig,
}

impl Trust<'_> {
    /// Checks `bytes` (with digest `found`) against the pinned digest and the signature.
    /// `from_url`: fetched over the network, where a signature is required unless allowed.
    pub fn check(
        &self,
        found: &str,
        pinned: Option<&str>,
        signature: Option<&SignatureConfig>,
        from_url: bool,
        bytes: &[u8],
    ) -> Result<(), TrustError> {
        if let Some(expected) = pinned
            && !expected.eq_ignore_ascii_case(found)
        {
            return Err(TrustError::Digest {
                expected: expected.to_ascii_lowercase(),
                found: found.to_owned(),
            });
        }
        match signature {
            // A signature is always checked, wherever the plugin comes from.
            Some(signature) => self.verify(signature, bytes),
            None if from_url && !self.remote.allow_unsigned => Err(TrustError::Unsigned),
            None => Ok(()),
        }
    }

    fn verify(&self, signature: &SignatureConfig, bytes: &[u8]) -> Result<(), TrustError> {
        let Some(key) = self.remote.signing_keys.get(&signature.key) else {
            let trusted: Vec<&str> = self
                .remote
                .signing_keys
                .keys()
                .map(String::as_str)
                .collect();
            return Err(TrustError::UntrustedKey {
                key: signature.key.clone(),
                trusted: if trusted.is_empty() {
                    "none".into()
                } else {
                    trusted.join(", ")
                },
            });
        };
        let key = public_key(key).map_err(TrustError::Malformed)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(signature.ed25519.trim())
            .map_err(|e| TrustError::Malformed(format!("not base64: {e}")))?;
        let raw: [u8; 64] = raw.try_into().map_err(|r: Vec<u8>| {
            TrustError::Malformed(format!("{} bytes, an ed25519 signature has 64", r.len()))
        })?;
        key.verify(bytes, &Signature::from_bytes(&raw))
            .map_err(|_| TrustError::BadSignature {
                key: signature.key.clone(),
            })
    }
}

/// A public key as the configuration writes it: base64 of its 32 bytes.
pub fn public_key(text: &str) -> Result<VerifyingKey, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let raw: [u8; 32] = raw
        .try_into()
        .map_err(|r: Vec<u8>| format!("{} bytes, an ed25519 public key has 32", r.len()))?;
    VerifyingKey::from_bytes(&raw).map_err(|e| format!("not an ed25519 public key: {e}"))
}

/// Signing, for `edgeguard plugin sign` and `edgeguard plugin keygen`: a private key file holds
/// the base64 of its 32-byte seed.
pub mod signing {
    use base64::Engine;
    use ed25519_dalek::{Signer, SigningKey};

    /// A fresh random seed for a private key.
    pub fn new_seed() -> std::io::Result<[u8; 32]> {
        let mut seed = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)?;
        Ok(seed)
    }

    /// The private key a key file holds (base64 of its seed).
    pub fn key_from_text(text: &str) -> Result<SigningKey, String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let seed: [u8; 32] = raw
            .try_into()
            .map_err(|r: Vec<u8>| format!("{} bytes, an ed25519 private key has 32", r.len()))?;
        Ok(SigningKey::from_bytes(&seed))
    }

    /// Base64, as key files and signatures are written.
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Base64 of the signature over `bytes`.
    pub fn sign(key: &SigningKey, bytes: &[u8]) -> String {
        encode(&key.sign(bytes).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(keys: &[(&str, &ed25519_dalek::SigningKey)]) -> RemoteConfig {
        let signing_keys = keys
            .iter()
            .map(|(n, k)| (n.to_string(), signing::encode(k.verifying_key().as_bytes())))
            .collect();
        RemoteConfig {
            signing_keys,
            ..RemoteConfig::default()
        }
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let ours = signing::key_from_text(&signing::encode(&[7u8; 32])).unwrap();
        let theirs = signing::key_from_text(&signing::encode(&[9u8; 32])).unwrap();
        let remote = remote(&[("release", &ours)]);
        let trust = Trust { remote: &remote };
        let bytes = b"\0asm component";
        let digest = crate::runtime::artifact_cache::sha256_hex(bytes);
        let sig = |key: &ed25519_dalek::SigningKey, name: &str, over: &[u8]| SignatureConfig {
            key: name.into(),
            ed25519: signing::sign(key, over),
        };

        assert_eq!(
            trust.check(
                &digest,
                Some(&digest.to_uppercase()),
                Some(&sig(&ours, "release", bytes)),
                true,
                bytes
            ),
            Ok(())
        );
        assert!(matches!(
            trust.check(&digest, Some(&"0".repeat(64)), None, false, bytes),
            Err(TrustError::Digest { .. })
        ));
        assert_eq!(
            trust.check(&digest, Some(&digest), None, true, bytes),
            Err(TrustError::Unsigned)
        );
        assert_eq!(
            trust.check(&digest, Some(&digest), None, false, bytes),
            Ok(()),
            "a local file may be unsigned"
        );
        assert_eq!(
            trust.check(
                &digest,
                None,
                Some(&sig(&ours, "release", b"other bytes")),
                false,
                bytes
            ),
            Err(TrustError::BadSignature {
                key: "release".into()
            })
        );
        assert_eq!(
            trust.check(
                &digest,
                None,
                Some(&sig(&theirs, "release", bytes)),
                false,
                bytes
            ),
            Err(TrustError::BadSignature {
                key: "release".into()
            })
        );
        assert_eq!(
            trust.check(
                &digest,
                None,
                Some(&sig(&theirs, "vendor", bytes)),
                true,
                bytes
            ),
            Err(TrustError::UntrustedKey {
                key: "vendor".into(),
                trusted: "release".into()
            })
        );
        let short = SignatureConfig {
            key: "release".into(),
            ed25519: signing::encode(&[1; 10]),
        };
        assert!(matches!(
            trust.check(&digest, None, Some(&short), true, bytes),
            Err(TrustError::Malformed(_))
        ));
        let lax = RemoteConfig {
            allow_unsigned: true,
            ..RemoteConfig::default()
        };
        assert_eq!(
            Trust { remote: &lax }.check(&digest, Some(&digest), None, true, bytes),
            Ok(())
        );
    }
}
