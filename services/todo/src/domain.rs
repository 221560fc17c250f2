//! Validated todo values, converted from the proto at the edge.

use base64::Engine;

use crate::error::TodoError;

pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

/// The caller, as verified by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    pub fn parse(value: &str) -> Result<Self, TodoError> {
        uuid::Uuid::parse_str(value)
            .map(|id| Self(id.hyphenated().to_string()))
            .map_err(|_| TodoError::Unauthenticated)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's idempotency key for CreateToDo (AIP-155): a UUID, kept in
/// its canonical lower-case hyphenated form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// `None` for an empty field: the create is not idempotent.
    pub fn parse(value: &str) -> Result<Option<Self>, TodoError> {
        if value.is_empty() {
            return Ok(None);
        }
        uuid::Uuid::parse_str(value)
            .map(|id| Some(Self(id.hyphenated().to_string())))
            .map_err(|_| TodoError::invalid("request_id", "must be a UUID"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TodoId(pub i32);

impl TryFrom<i32> for TodoId {
    type Error = TodoError;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        if value <= 0 {
            return Err(TodoError::invalid("id", "must be a positive entry id"));
        }
        Ok(Self(value))
    }
}

/// Title and text as stored: counted in Unicode characters, never altered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub title: String,
    pub text: String,
    pub done: Option<bool>,
}

impl Content {
    /// SHA-256 over the fields, each length-prefixed so that no two
    /// different contents share an encoding.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for field in [self.title.as_bytes(), self.text.as_bytes()] {
            digest.update(&(field.len() as u64).to_be_bytes());
            digest.update(field);
        }
        digest.update(&[match self.done {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        }]);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.finish().as_ref());
        out
    }

    pub fn new(title: String, text: String, done: Option<bool>) -> Result<Self, TodoError> {
        if !(1..=200).contains(&title.chars().count()) {
            return Err(TodoError::invalid("title", "must be 1 to 200 characters"));
        }
        if text.chars().count() > 2000 {
            return Err(TodoError::invalid(
                "text",
                "must be at most 2000 characters",
            ));
        }
        Ok(Self { title, text, done })
    }
}

/// Where a page starts: after entry `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub after: i32,
    pub limit: u32,
}

const TOKEN_VERSION: u8 = 1;

impl Page {
    pub fn new(limit: u32, token: &str) -> Result<Self, TodoError> {
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = if token.is_empty() {
            0
        } else {
            decode_token(token)?
        };
        Ok(Self { after, limit })
    }
}

/// Opaque continuation token: version byte and the last id returned.
pub fn encode_token(last_id: i32) -> String {
    let mut bytes = [0u8; 5];
    bytes[0] = TOKEN_VERSION;
    bytes[1..].copy_from_slice(&last_id.to_be_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_token(token: &str) -> Result<i32, TodoError> {
    let malformed = || TodoError::invalid("page_token", "is malformed");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| malformed())?;
    match bytes.as_slice() {
        [TOKEN_VERSION, id @ ..] if id.len() == 4 => {
            let id = i32::from_be_bytes([id[0], id[1], id[2], id[3]]);
            if id <= 0 {
                return Err(malformed());
            }
            Ok(id)
        }
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_counts_characters() {
        assert!(Content::new("🎉".repeat(200), "✓".repeat(2000), None).is_ok());
        assert!(Content::new("🎉".repeat(201), String::new(), None).is_err());
        assert!(Content::new(String::new(), String::new(), None).is_err());
        assert!(Content::new("t".into(), "x".repeat(2001), None).is_err());
    }

    #[test]
    fn page_defaults_caps_and_tokens() {
        assert_eq!(
            Page::new(0, "").expect("page"),
            Page {
                after: 0,
                limit: 100
            }
        );
        assert_eq!(Page::new(5000, "").expect("page").limit, 1000);
        let token = encode_token(42);
        assert_eq!(
            Page::new(10, &token).expect("page"),
            Page {
                after: 42,
                limit: 10
            }
        );
        for bad in ["!!", "AQ", "AgAAACo", "AQAAAAA", "zzzzzzzzzzzz"] {
            assert!(Page::new(1, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_and_users() {
        assert!(TodoId::try_from(0).is_err());
        assert!(TodoId::try_from(-3).is_err());
        assert!(UserId::parse("not-a-uuid").is_err());
        assert!(UserId::parse("6f1c7d7e-8a51-4b8e-9d33-1e2f3a4b5c6d").is_ok());
    }
}
