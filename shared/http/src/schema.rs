//! The rules of common fields, as JSON Schema for the OpenAPI document (`schema_with`). Each
//! states what the domain's parser accepts, or a strict subset of it, so a client following
//! the document is never refused for a field's shape. Rules a schema cannot state (reserved
//! slugs, the password policy's breached words, an unknown plan) are documented as 422s.

use utoipa::openapi::{Object, ObjectBuilder, Type};

fn text(pattern: &str, min_length: usize, max_length: usize, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(min_length))
        .max_length(Some(max_length))
        .description(Some(description))
        .build()
}

/// A tenant's slug.
pub fn slug() -> Object {
    text("^[a-z0-9]+(-[a-z0-9]+)*$", 3, 40, "`a-z`, `0-9` and inner single hyphens; not a reserved word")
}

/// A name people read: no control characters, not blank.
pub fn name() -> Object {
    let visible = r"[^\x00-\x1f\x7f-\x9f]";
    let pattern = format!(r"^{visible}*[^\s\x00-\x1f\x7f-\x9f]{visible}*$");
    text(&pattern, 1, 120, "1–120 characters, no control characters")
}

/// An e-mail address: a visible-ASCII local part of at most 64 characters, a dotted domain.
pub fn email() -> Object {
    text(
        r"^[!-?A-~]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$",
        3,
        254,
        "an e-mail address like name@example.com",
    )
}

/// A role's name.
pub fn role_name() -> Object {
    text("^[a-z][a-z0-9_-]{1,39}$", 2, 40, "a lowercase letter, then lowercase letters, digits, `-` or `_`")
}

/// A partner's id.
pub fn partner_id() -> Object {
    text("^[a-z0-9-]{2,64}$", 2, 64, "lowercase letters, digits or hyphens")
}

/// An `Idempotency-Key`.
pub fn idempotency_key() -> Object {
    text(
        "^[!-~]{1,255}$",
        1,
        255,
        "1–255 visible ASCII characters; a retry with the same key and body gets the first answer",
    )
}
