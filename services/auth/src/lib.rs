//! What the user service (which signs tokens), the gateway (which verifies
//! them) and the todo service (which trusts the gateway's word) share.

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde::{Deserialize, Serialize};

/// Metadata key under which the gateway passes the verified user id to the
/// backends. Whatever a client sends under this name is overwritten.
pub const USER_ID_HEADER: &str = "x-todoapp-user-id";

/// Metadata key under which the gateway passes the client's IP address
/// (after trusted-proxy handling) to the user service, for throttling.
/// Whatever a client sends under this name is dropped.
pub const CLIENT_ADDRESS_HEADER: &str = "x-todoapp-client-address";

/// The claims of every token we issue and accept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user's UUID.
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM-encoded {0}")]
    Pem(&'static str),
    #[error("not an Ed25519 key")]
    NotEd25519,
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the raw 32-byte
/// key follows it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Key id (`kid`) of an Ed25519 public key: a short hash of the raw key, so
/// signer and verifier agree without configuring ids by hand.
pub fn key_id(raw_public_key: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw_public_key);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])
}

/// An Ed25519 signing key from a PKCS#8 PEM file's contents.
pub struct SigningKey {
    pub encoding: jsonwebtoken::EncodingKey,
    pub kid: String,
}

impl SigningKey {
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|_| KeyError::Pem("PKCS#8 private key"))?;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(
            der.secret_pkcs8_der(),
        )
        .map_err(|_| KeyError::NotEd25519)?;
        let kid = key_id(aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref());
        Ok(Self {
            encoding: jsonwebtoken::EncodingKey::from_ed_der(der.secret_pkcs8_der()),
            kid,
        })
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// An Ed25519 verifying key from an SPKI PEM file's contents.
pub struct VerifyingKey {
    pub decoding: jsonwebtoken::DecodingKey,
    pub kid: String,
}

impl VerifyingKey {
    pub fn from_spki_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|_| KeyError::Pem("public key"))?;
        let raw = der
            .as_ref()
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .filter(|raw| raw.len() == 32)
            .ok_or(KeyError::NotEd25519)?;
        Ok(Self {
            decoding: jsonwebtoken::DecodingKey::from_ed_der(raw),
            kid: key_id(raw),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_keys() {
        assert!(SigningKey::from_pkcs8_pem(b"not pem").is_err());
        assert!(VerifyingKey::from_spki_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
    }

    #[test]
    fn key_ids_are_stable_and_distinct() {
        assert_eq!(key_id(&[1; 32]), key_id(&[1; 32]));
        assert_ne!(key_id(&[1; 32]), key_id(&[2; 32]));
        assert_eq!(key_id(&[1; 32]).len(), 16);
    }
}
