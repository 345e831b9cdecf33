//! What a new password must be: long enough to resist guessing, not the account's own
//! e-mail, and not one of the patterns every breached-password list starts with.

use crate::values::{Email, InvalidValue};

pub const MIN_LENGTH: usize = 12;
pub const MAX_LENGTH: usize = 128;

/// Words that head every breach corpus; a password that is one of them plus digits and
/// symbols is refused.
const BREACHED_STEMS: &[&str] = &[
    "password",
    "passw0rd",
    "qwerty",
    "qwertyuiop",
    "letmein",
    "welcome",
    "iloveyou",
    "admin",
    "administrator",
    "dotmac",
    "changeme",
    "secret",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "abc",
    "abcdef",
    "internet",
    "login",
    "master",
];

fn invalid(reason: &str) -> InvalidValue {
    InvalidValue::new("new_password", reason)
}

/// True when the letters are nothing but breached words strung together ("dotmacadmin"),
/// whatever digits and symbols surround them.
fn made_of_breached_stems(letters: &str) -> bool {
    let bytes = letters.as_bytes();
    // reachable[i]: the first i bytes split into stems.
    let mut reachable = vec![false; bytes.len() + 1];
    reachable[0] = true;
    for start in 0..bytes.len() {
        if !reachable[start] {
            continue;
        }
        for stem in BREACHED_STEMS {
            if bytes[start..].starts_with(stem.as_bytes()) {
                reachable[start + stem.len()] = true;
            }
        }
    }
    reachable[bytes.len()]
}

pub fn check(password: &str, email: &Email) -> Result<(), InvalidValue> {
    let length = password.chars().count();
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(invalid("must be 12 to 128 characters"));
    }
    let lower = password.to_lowercase();
    let (local, _) = email.as_str().split_once('@').unwrap_or((email.as_str(), ""));
    if lower == email.as_str() || (local.len() >= 3 && lower.contains(local)) {
        return Err(invalid("must not contain the account's e-mail"));
    }
    let letters: String = lower.chars().filter(|c| c.is_alphabetic()).collect();
    if made_of_breached_stems(&letters) {
        return Err(invalid("is a commonly breached password"));
    }
    let chars: Vec<char> = lower.chars().collect();
    if chars.windows(2).all(|w| w[0] == w[1]) {
        return Err(invalid("must not repeat one character"));
    }
    let ascending = chars.windows(2).all(|w| (w[1] as u32).wrapping_sub(w[0] as u32) == 1);
    if ascending {
        return Err(invalid("must not be a simple sequence"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategies::*;
    use proptest::prelude::*;

    fn email() -> Email {
        Email::parse("ops.team@acme.example").expect("email")
    }

    #[test]
    fn accepts_a_reasonable_passphrase() {
        assert!(check("correct horse battery staple", &email()).is_ok());
        assert!(check("Tr0ub4dor&3-extended", &email()).is_ok());
    }

    #[test]
    fn refuses_the_usual_suspects() {
        for bad in [
            "short",
            "Password123456!",
            "qwerty1234567",
            "111111111111",
            "123456789012",
            "abcdefghijklm",
            "ops.team@acme.example",
            "my-ops.team-password",
            "dotmac-admin-2026",
        ] {
            assert!(check(bad, &email()).is_err(), "{bad} should be refused");
        }
        assert!(check(&"x".repeat(129), &email()).is_err());
    }

    fn parse(email: &str) -> Email {
        Email::parse(email).expect("generated e-mails are valid")
    }

    #[test]
    fn the_length_rule_holds_exactly_at_12_and_128_characters() {
        let owner = parse(UNRELATED_OWNER);
        // Counted in characters, not bytes: `é` is two bytes.
        for (length, accepted) in [(11, false), (12, true), (128, true), (129, false)] {
            let password: String = "zj".chars().chain("é".repeat(length - 2).chars()).collect();
            let expected = if accepted { Ok(()) } else { Err(invalid(PASSWORD_LENGTH)) };
            assert_eq!(check(&password, &owner), expected, "{length} characters");
        }
    }

    #[test]
    fn a_local_part_shorter_than_three_letters_may_appear_in_the_password() {
        // Refusing every password holding "ab" would refuse far too much.
        assert_eq!(check("zjxx-ab-kiwi-yurt", &parse("ab@acme.example")), Ok(()));
        assert_eq!(check("zjxx-abc-kiwi-yurt", &parse("abc@acme.example")), Err(invalid(PASSWORD_EMAIL)));
    }

    proptest! {
        #[test]
        fn generated_valid_passwords_are_accepted(password in valid_password(), owner in password_owner()) {
            prop_assert_eq!(check(&password, &parse(&owner)), Ok(()));
        }

        /// Breached words are refused only when they are all the letters there are.
        #[test]
        fn breached_words_among_other_letters_are_accepted(password in password_with_breached_words_and_more()) {
            prop_assert_eq!(check(&password, &parse(UNRELATED_OWNER)), Ok(()));
        }

        #[test]
        fn each_broken_password_rule_is_refused_with_its_own_reason((password, owner, reason) in invalid_password()) {
            prop_assert_eq!(check(&password, &parse(&owner)), Err(invalid(reason)));
        }

        /// Whatever the input, an accepted password has an allowed length and does not hold
        /// the account's local part.
        #[test]
        fn accepted_passwords_meet_the_length_and_email_rules(
            password in prop_oneof![valid_password(), "\\PC{0,140}", "[i-z ]{0,6}ops.team[i-z ]{0,6}"],
        ) {
            if check(&password, &email()).is_ok() {
                let n = password.chars().count();
                prop_assert!((MIN_LENGTH..=MAX_LENGTH).contains(&n));
                prop_assert!(!password.to_lowercase().contains("ops.team"));
            }
        }
    }
}
