//! Signing the JWTs the gateway verifies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header};
use secrecy::{ExposeSecret, SecretSlice};
use todoapp_auth::{Claims, SigningKey};
use todoapp_runtime::config::read_file;
use todoapp_runtime::ConfigError;

use crate::config::JwtSettings;
use crate::error::UserError;

pub struct TokenIssuer {
    key: SigningKey,
    header: Header,
    issuer: String,
    audience: String,
    lifetime: Duration,
}

pub struct IssuedToken {
    pub jwt: String,
    pub expires_at: SystemTime,
}

impl TokenIssuer {
    pub fn load(settings: &JwtSettings) -> Result<Self, ConfigError> {
        // The key file's contents are zeroed once parsed.
        let pem = SecretSlice::from(read_file("jwt.private_key", &settings.private_key)?);
        let key = SigningKey::from_pkcs8_pem(pem.expose_secret())
            .map_err(|e| ConfigError::file("jwt.private_key", &settings.private_key, e))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        Ok(Self {
            key,
            header,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            lifetime: Duration::from_secs(settings.lifetime_secs),
        })
    }

    pub fn issue(&self, user_id: &str) -> Result<IssuedToken, UserError> {
        let now = SystemTime::now();
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| UserError::Internal("clock before 1970".into()))?
            .as_secs();
        let claims = Claims {
            sub: user_id.to_owned(),
            iat,
            exp: iat + self.lifetime.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let jwt = jsonwebtoken::encode(&self.header, &claims, &self.key.encoding)
            .map_err(|e| UserError::Internal(format!("signing failed: {e}")))?;
        Ok(IssuedToken {
            jwt,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}
