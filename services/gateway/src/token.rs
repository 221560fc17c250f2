//! Verifying client tokens: every call, before anything reaches a backend.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
    #[error("more than one authorization header")]
    Ambiguous,
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

/// Verified tokens remembered, at most; the cache is emptied when full.
const CACHE_LIMIT: usize = 16_384;

pub struct TokenVerifier {
    keys: HashMap<String, Key>,
    /// Exact token text -> (user id, exp) of tokens whose signature and
    /// claims already verified. Signature checks dominate the gateway's CPU
    /// and clients reuse a token for many calls; expiry is still checked on
    /// every hit, and only the identical string (signature included) hits.
    verified: Mutex<HashMap<Box<str>, (String, u64)>>,
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
            keys.insert(
                key.kid,
                Key {
                    decoding: key.decoding,
                },
            );
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
            verified: Mutex::new(HashMap::new()),
            validation,
            max_lifetime: settings.max_lifetime_secs,
            leeway: settings.leeway_secs,
        })
    }

    /// The verified user id (a UUID) from an `authorization` value, bare or
    /// `Bearer <jwt>`. Each outcome is counted in
    /// `todoapp_token_verifications_total{outcome}`.
    pub fn verify(&self, authorization: Option<&[u8]>) -> Result<String, TokenError> {
        let result = self.verify_uncounted(authorization);
        metrics().count(&result);
        result
    }

    /// Counts a refusal decided outside [`TokenVerifier::verify`].
    pub fn refused(&self, error: TokenError) -> TokenError {
        metrics().count(&Err(error));
        error
    }

    fn verify_uncounted(&self, authorization: Option<&[u8]>) -> Result<String, TokenError> {
        let raw = authorization.ok_or(TokenError::Missing)?;
        if raw.len() > MAX_AUTHORIZATION_BYTES {
            return Err(TokenError::TooLong);
        }
        let value = std::str::from_utf8(raw)
            .map_err(|_| TokenError::Malformed)?
            .trim();
        let token = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            Some(_) => return Err(TokenError::Malformed),
            None => value,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(user) = self.cached(token, now)? {
            metrics().cache_hits.inc();
            return Ok(user);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|_| TokenError::Rejected)?
            .claims;
        if claims.iat > now + self.leeway {
            return Err(TokenError::Rejected);
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime {
            return Err(TokenError::TooLongLived);
        }
        let user = uuid::Uuid::parse_str(&claims.sub)
            .map_err(|_| TokenError::Rejected)?
            .hyphenated()
            .to_string();
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= CACHE_LIMIT {
                verified.clear();
            }
            verified.insert(token.into(), (user.clone(), claims.exp));
        }
        Ok(user)
    }

    /// The user of an already verified `token`, unless it has expired since.
    fn cached(&self, token: &str, now: u64) -> Result<Option<String>, TokenError> {
        let Ok(mut verified) = self.verified.lock() else {
            return Ok(None);
        };
        match verified.get(token) {
            Some((user, exp)) if now <= exp + self.leeway => Ok(Some(user.clone())),
            Some(_) => {
                verified.remove(token);
                Err(TokenError::Rejected)
            }
            None => Ok(None),
        }
    }
}

impl TokenError {
    /// The `outcome` label of a refusal.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::TooLong => "too_long",
            TokenError::Ambiguous => "ambiguous",
            TokenError::Malformed => "malformed",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Rejected => "rejected",
            TokenError::TooLongLived => "too_long_lived",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

struct TokenMetrics {
    outcomes: Family<OutcomeLabel, Counter>,
    cache_hits: Counter,
}

impl TokenMetrics {
    fn count(&self, result: &Result<String, TokenError>) {
        let outcome = match result {
            Ok(_) => "valid",
            Err(e) => e.label(),
        };
        self.outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

fn metrics() -> &'static TokenMetrics {
    static METRICS: LazyLock<TokenMetrics> = LazyLock::new(|| TokenMetrics {
        outcomes: todoapp_runtime::metrics::counter_family(
            "todoapp_token_verifications",
            "Client token verifications by outcome (valid, or why refused)",
        ),
        cache_hits: todoapp_runtime::metrics::counter(
            "todoapp_token_cache_hits",
            "Token verifications answered from the cache of verified tokens",
        ),
    });
    &METRICS
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;

    const SUB: &str = "6f1c7d7e-8a51-4b8e-9d33-1e2f3a4b5c6d";

    struct Keys {
        _dir: tempfile::TempDir,
        signers: Vec<(String, EncodingKey, Vec<u8>)>,
        verifier: TokenVerifier,
    }

    /// `n` Ed25519 key pairs; the verifier trusts all of them.
    fn keys(n: usize) -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut signers = Vec::new();
        let mut public_keys = Vec::new();
        for i in 0..n {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("keypair");
            let public_pem = pair.public_key_pem();
            let path = dir.path().join(format!("k{i}.pub"));
            std::fs::write(&path, &public_pem).expect("write");
            public_keys.push(path);
            let signing = todoapp_auth::SigningKey::from_pkcs8_pem(pair.serialize_pem().as_bytes())
                .expect("signing key");
            signers.push((signing.kid, signing.encoding, public_pem.into_bytes()));
        }
        let settings = JwtVerifySettings {
            public_keys,
            issuer: "todoapp".into(),
            audience: "todoapp".into(),
            max_lifetime_secs: 3600,
            leeway_secs: 60,
        };
        Keys {
            _dir: dir,
            signers,
            verifier: TokenVerifier::load(&settings).expect("verifier"),
        }
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    }

    fn claims() -> Value {
        json!({"sub": SUB, "iat": now(), "exp": now() + 600, "iss": "todoapp", "aud": "todoapp"})
    }

    fn sign(keys: &Keys, which: usize, claims: &Value) -> String {
        let (kid, key, _) = &keys.signers[which];
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, claims, key).expect("sign")
    }

    fn check(keys: &Keys, token: &str) -> Result<String, TokenError> {
        keys.verifier
            .verify(Some(format!("Bearer {token}").as_bytes()))
    }

    #[test]
    fn accepts_valid_tokens_bare_or_bearer() {
        let k = keys(1);
        let token = sign(&k, 0, &claims());
        assert_eq!(check(&k, &token).as_deref(), Ok(SUB));
        assert_eq!(
            k.verifier.verify(Some(token.as_bytes())).as_deref(),
            Ok(SUB)
        );
        assert_eq!(
            k.verifier
                .verify(Some(format!("bearer  {token} ").as_bytes()))
                .as_deref(),
            Ok(SUB)
        );
        assert_eq!(k.verifier.verify(None), Err(TokenError::Missing));
        assert_eq!(
            k.verifier.verify(Some(format!("Basic {token}").as_bytes())),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn rotation_accepts_every_configured_key_and_no_other() {
        let k = keys(2);
        for which in 0..2 {
            assert!(
                check(&k, &sign(&k, which, &claims())).is_ok(),
                "key {which}"
            );
        }
        let stranger = keys(1);
        assert_eq!(
            check(&k, &sign(&stranger, 0, &claims())),
            Err(TokenError::UnknownKey)
        );
        // A known kid with another key's signature fails the signature check.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(k.signers[0].0.clone());
        let forged =
            jsonwebtoken::encode(&header, &claims(), &stranger.signers[0].1).expect("sign");
        assert_eq!(check(&k, &forged), Err(TokenError::Rejected));
        let no_kid =
            jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims(), &k.signers[0].1)
                .expect("sign");
        assert_eq!(check(&k, &no_kid), Err(TokenError::UnknownKey));
    }

    #[test]
    fn time_claims_with_sixty_seconds_leeway() {
        let k = keys(1);
        let with = |field: &str, value: Value| {
            let mut c = claims();
            c[field] = value;
            check(&k, &sign(&k, 0, &c))
        };
        assert_eq!(with("exp", json!(now() - 120)), Err(TokenError::Rejected));
        assert!(with("exp", json!(now() - 30)).is_ok(), "within leeway");
        assert_eq!(with("nbf", json!(now() + 120)), Err(TokenError::Rejected));
        assert!(with("nbf", json!(now() + 30)).is_ok(), "within leeway");
        assert_eq!(with("iat", json!(now() + 120)), Err(TokenError::Rejected));
        let mut long = claims();
        long["exp"] = json!(now() + 7200);
        assert_eq!(
            check(&k, &sign(&k, 0, &long)),
            Err(TokenError::TooLongLived)
        );
    }

    #[test]
    fn issuer_audience_subject_and_required_claims() {
        let k = keys(1);
        for (field, value) in [
            ("iss", json!("someone-else")),
            ("aud", json!("other-app")),
            ("sub", json!("not-a-uuid")),
        ] {
            let mut c = claims();
            c[field] = value;
            assert_eq!(
                check(&k, &sign(&k, 0, &c)),
                Err(TokenError::Rejected),
                "{field}"
            );
        }
        for field in ["sub", "exp", "iat", "iss", "aud"] {
            let mut c = claims();
            c.as_object_mut().expect("object").remove(field);
            assert!(
                check(&k, &sign(&k, 0, &c)).is_err(),
                "missing {field} accepted"
            );
        }
    }

    #[test]
    fn remembered_tokens_still_expire() {
        let k = keys(1);
        let mut c = claims();
        c["exp"] = json!(now() - 50); // expired, but within the leeway
        let token = sign(&k, 0, &c);
        assert!(check(&k, &token).is_ok());
        // The same token, seen later than exp + leeway: refused from the cache.
        assert_eq!(
            k.verifier.cached(&token, (now() + 20) as u64),
            Err(TokenError::Rejected)
        );
        assert_eq!(
            check(&k, &token).map(|_| ()),
            Ok(()),
            "evicted entry re-verifies normally"
        );
    }

    #[test]
    fn algorithm_is_pinned() {
        let k = keys(1);
        let (kid, _, public_pem) = &k.signers[0];
        // HMAC keyed with the (public) verification key: the classic confusion attack.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let hmac = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(public_pem))
            .expect("sign");
        assert_eq!(check(&k, &hmac), Err(TokenError::Rejected));

        use base64::Engine;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": kid})),
            b64(&claims())
        );
        assert!(check(&k, &none).is_err());
    }

    #[test]
    fn tampering_and_oversize_are_refused() {
        let k = keys(1);
        let token = sign(&k, 0, &claims());
        // Verified once (and so remembered): variants must still fail.
        assert!(check(&k, &token).is_ok());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        use base64::Engine;
        let mut other = claims();
        other["sub"] = json!("11111111-1111-4111-8111-111111111111");
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(other.to_string());
        assert_eq!(check(&k, &parts.join(".")), Err(TokenError::Rejected));
        assert_eq!(check(&k, &format!("{token}x")), Err(TokenError::Rejected));
        let big = format!("Bearer {token}{}", " ".repeat(MAX_AUTHORIZATION_BYTES));
        assert_eq!(
            k.verifier.verify(Some(big.as_bytes())),
            Err(TokenError::TooLong)
        );
        for junk in [&b"\xff\xfe"[..], b"", b"a.b", b"...."] {
            assert!(k.verifier.verify(Some(junk)).is_err());
        }
    }
}
