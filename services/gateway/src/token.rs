//! Verifying client tokens: every call, before anything reaches a backend.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use todoapp_auth::{Claims, VerifyingKey};
use todoapp_runtime::config::read_file;
use todoapp_runtime::ConfigError;

use crate::config::JwtVerifySettings;

/// Longest `authorization` value looked at; longer ones are refused unread.
pub const MAX_AUTHORIZATION_BYTES: usize = 4096;

/// Why a token was refused. Clients only ever see "invalid or missing
/// token"; the reason is for debug logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no authorization metadata")]
    Missing,
    #[error("authorization metadata too long")]
    TooLong,
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("signature, algorithm or claims rejected")]
    Rejected,
    #[error("token lifetime exceeds the maximum")]
    TooLongLived,
}

struct Key {
    decoding: DecodingKey,
}

pub struct TokenVerifier {
    keys: HashMap<String, Key>,
    validation: Validation,
    max_lifetime: u64,
    leeway: u64,
}

impl TokenVerifier {
    pub fn load(settings: &JwtVerifySettings) -> Result<Self, ConfigError> {
        let mut keys = HashMap::new();
        for path in &settings.public_keys {
            let pem = read_file("jwt.public_keys", path)?;
            let key = VerifyingKey::from_spki_pem(&pem)
                .map_err(|e| ConfigError::file("jwt.public_keys", path, e))?;
            keys.insert(key.kid, Key { decoding: key.decoding });
        }
        // Pinned to EdDSA: `alg: none`, HMAC-with-the-public-key and any
        // other algorithm switch fail before the signature is looked at.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = settings.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_audience(&[&settings.audience]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_required_spec_claims(&["sub", "exp", "iat", "iss", "aud"]);
        Ok(Self {
            keys,
            validation,
            max_lifetime: settings.max_lifetime_secs,
            leeway: settings.leeway_secs,
        })
    }

    /// The verified user id (a UUID) from an `authorization` value, bare or
    /// `Bearer <jwt>`.
    pub fn verify(&self, authorization: Option<&[u8]>) -> Result<String, TokenError> {
        let raw = authorization.ok_or(TokenError::Missing)?;
        if raw.len() > MAX_AUTHORIZATION_BYTES {
            return Err(TokenError::TooLong);
        }
        let value = std::str::from_utf8(raw).map_err(|_| TokenError::Malformed)?.trim();
        let token = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            Some(_) => return Err(TokenError::Malformed),
            None => value,
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|_| TokenError::Rejected)?
            .claims;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if claims.iat > now + self.leeway {
            return Err(TokenError::Rejected);
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime {
            return Err(TokenError::TooLongLived);
        }
        let user = uuid::Uuid::parse_str(&claims.sub).map_err(|_| TokenError::Rejected)?;
        Ok(user.hyphenated().to_string())
    }
}
