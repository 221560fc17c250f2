//! Validated request values: the proto's strings become these at the edge.

use secrecy::SecretString;
use unicode_normalization::{is_nfc, UnicodeNormalization};

use crate::error::UserError;

/// A username as stored and compared: byte for byte, on every engine.
///
/// Two names that look the same must not be two accounts, so the name is
/// NFC-normalised (a decomposed "é" from one keyboard logs into the account
/// registered with the composed one from another). What cannot be seen
/// cannot be typed back reliably, so leading or trailing whitespace, control
/// characters and invisible formatting characters are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl TryFrom<String> for Username {
    type Error = UserError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let value: String = if is_nfc(&value) {
            value
        } else {
            value.nfc().collect()
        };
        let chars = value.chars().count();
        if !(1..=100).contains(&chars) {
            return Err(UserError::invalid(
                "username",
                "must be 1 to 100 characters",
            ));
        }
        if value.trim() != value {
            return Err(UserError::invalid(
                "username",
                "must not begin or end with whitespace",
            ));
        }
        if value.chars().any(|c| c.is_control() || is_invisible(c)) {
            return Err(UserError::invalid(
                "username",
                "must not contain control or invisible characters",
            ));
        }
        Ok(Self(value))
    }
}

/// Format characters that render as nothing: zero-width spaces and joiners,
/// direction marks and overrides, word joiners, the byte-order mark.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

impl Username {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password exactly as the user typed it: never trimmed, normalised or truncated.
#[derive(Debug, Clone)]
/// Held as a `secrecy` secret from the proto on: redacted in `Debug`, zeroed
/// when dropped, never copied back into a plain `String`.
pub struct Password(SecretString);

impl TryFrom<String> for Password {
    type Error = UserError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if !(8..=128).contains(&value.chars().count()) {
            return Err(UserError::invalid(
                "password",
                "must be 8 to 128 characters",
            ));
        }
        Ok(Self(SecretString::from(value)))
    }
}

impl Password {
    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// An email address, stored lower-cased so uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl TryFrom<String> for Email {
    type Error = UserError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.chars().count() > 254 {
            return Err(UserError::invalid(
                "email",
                "must be at most 254 characters",
            ));
        }
        if !email_address::EmailAddress::is_valid(&value) || !value.contains('.') {
            return Err(UserError::invalid("email", "is not a valid email address"));
        }
        Ok(Self(value.to_lowercase()))
    }
}

impl Email {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn field_of(e: UserError) -> &'static str {
        match e {
            UserError::InvalidArgument { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn username_bounds() {
        assert!(Username::try_from("a".to_string()).is_ok());
        assert!(Username::try_from("é".repeat(100)).is_ok());
        assert_eq!(
            field_of(Username::try_from(String::new()).unwrap_err()),
            "username"
        );
        assert_eq!(
            field_of(Username::try_from("x".repeat(101)).unwrap_err()),
            "username"
        );
        assert!(Username::try_from("a\nb".to_string()).is_err());
    }

    #[test]
    fn usernames_are_exact_visible_and_nfc() {
        for bad in [
            " ann",
            "ann ",
            "ann\t",
            "\u{00A0}ann",
            "an\u{200B}n",
            "ann\u{FEFF}",
            "a\u{202E}nn",
        ] {
            assert_eq!(
                field_of(Username::try_from(bad.to_string()).unwrap_err()),
                "username",
                "{bad:?}"
            );
        }
        // Inner spaces are fine and kept.
        assert_eq!(
            Username::try_from("ann lee".to_string())
                .expect("ok")
                .as_str(),
            "ann lee"
        );
        // Decomposed e + combining acute becomes the composed é.
        let decomposed = Username::try_from("Jose\u{0301}".to_string()).expect("ok");
        let composed = Username::try_from("Jos\u{00E9}".to_string()).expect("ok");
        assert_eq!(decomposed, composed);
        assert_eq!(composed.as_str(), "Jos\u{00E9}");
        // Case is kept: usernames are case-sensitive, emails are not.
        assert_ne!(
            Username::try_from("Ann".to_string()).expect("ok"),
            Username::try_from("ann".to_string()).expect("ok")
        );
    }

    #[test]
    fn password_bounds_count_characters_and_keep_bytes() {
        assert!(Password::try_from("1234567".to_string()).is_err());
        let p = Password::try_from("  spaced  ".to_string()).expect("valid");
        assert_eq!(p.secret().expose_secret(), "  spaced  ");
        assert!(Password::try_from("🔑".repeat(128)).is_ok());
        assert_eq!(
            field_of(Password::try_from("x".repeat(129)).unwrap_err()),
            "password"
        );
    }

    #[test]
    fn debug_of_a_password_does_not_show_it() {
        let p = Password::try_from("hunter2 hunter2".to_string()).expect("valid");
        let shown = format!("{p:?} {:?}", p.secret());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn email_rules() {
        assert_eq!(
            Email::try_from("Ann@Example.org".to_string())
                .expect("ok")
                .as_str(),
            "ann@example.org"
        );
        assert_eq!(
            field_of(Email::try_from("nope".to_string()).unwrap_err()),
            "email"
        );
        assert!(Email::try_from(format!("{}@example.org", "a".repeat(250))).is_err());
    }
}
