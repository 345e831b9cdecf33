//! Test-only proptest generators for the domain's values. Each one is either valid by
//! construction or broken in exactly one named way, so a property reaches the branch it is
//! about instead of hoping random Unicode lands there (it almost never reaches `Ok`).
//!
//! The expectations here (reserved words, breached words, refusal reasons) are written out
//! from the documented rules, not read from the code under test, so a rule dropped from the
//! code makes a property fail.

use proptest::prelude::*;
use proptest::sample::select;

/// Slugs the README and `TenantSlug`'s doc promise to refuse because they are taken by the
/// platform's own routes and hostnames.
pub const EXPECTED_RESERVED_SLUGS: &[&str] =
    &["admin", "api", "app", "www", "platform", "dotmac", "status", "health"];

pub const SLUG_LENGTH: &str = "must be 3 to 40 characters";
pub const SLUG_CHARSET: &str = "may contain only lowercase letters, digits and hyphens";
pub const SLUG_HYPHENS: &str = "hyphens must separate letters or digits";
pub const SLUG_RESERVED: &str = "is reserved";

pub const EMAIL_REFUSED: &str = "must be an e-mail address like name@example.com";

pub const PASSWORD_LENGTH: &str = "must be 12 to 128 characters";
pub const PASSWORD_EMAIL: &str = "must not contain the account's e-mail";
pub const PASSWORD_BREACHED: &str = "is a commonly breached password";
pub const PASSWORD_REPEATS: &str = "must not repeat one character";
pub const PASSWORD_SEQUENCE: &str = "must not be a simple sequence";

/// Inserts `piece` at a char boundary chosen by `at` (any boundary, ends included).
fn insert_at(base: &str, at: usize, piece: &str) -> String {
    let boundaries: Vec<usize> = base.char_indices().map(|(i, _)| i).chain([base.len()]).collect();
    let i = boundaries[at % boundaries.len()];
    format!("{}{piece}{}", &base[..i], &base[i..])
}

/// Inserts `piece` strictly inside `base` (never first or last), so trimming cannot drop it.
fn insert_inside(base: &str, at: usize, piece: &str) -> String {
    let inner: Vec<usize> = base.char_indices().map(|(i, _)| i).skip(1).collect();
    assert!(!inner.is_empty(), "{base:?} has no inside");
    let i = inner[at % inner.len()];
    format!("{}{piece}{}", &base[..i], &base[i..])
}

// ---------------------------------------------------------------------------------------
// Slugs
// ---------------------------------------------------------------------------------------

/// `[a-z0-9]` runs joined by single hyphens, 3–40 bytes, never a reserved word; the 3 and 40
/// boundaries get their own share of cases.
pub fn valid_slug() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9]{3,9}(-[a-z0-9]{1,9}){0,3}",
        1 => "[a-z0-9]{3}",
        1 => "[a-z0-9]{40}",
        1 => "[a-z0-9]{19}-[a-z0-9]{20}",
    ]
    .prop_filter("reserved words are refused on purpose", |s| !EXPECTED_RESERVED_SLUGS.contains(&s.as_str()))
}

/// A valid slug short enough (at most 29 bytes) to take one more character or two.
fn short_valid_slug() -> impl Strategy<Value = String> {
    "[a-z0-9]{3,9}(-[a-z0-9]{1,9}){0,2}".prop_filter("reserved words are refused on purpose", |s| {
        !EXPECTED_RESERVED_SLUGS.contains(&s.as_str())
    })
}

/// A slug that breaks exactly one rule, with the reason the parser must give.
pub fn invalid_slug() -> impl Strategy<Value = (String, &'static str)> {
    // Characters outside `a-z0-9-`: upper case, punctuation, inner spaces, non-ASCII letters
    // (2 and 4 bytes, still within 40 bytes once inserted in a short slug).
    let forbidden = select(vec!["A", "Z", "Q", "_", ".", "!", "@", "/", " ", "\t", "é", "ß", "ı", "🦀"]);
    prop_oneof![
        "[a-z0-9]{0,2}".prop_map(|s| (s, SLUG_LENGTH)),
        // Trimmed before it is measured: padding does not make a short slug long enough.
        "[a-z0-9]{1,2}".prop_map(|s| (format!("  {s}\t "), SLUG_LENGTH)),
        "[a-z0-9]{41,60}".prop_map(|s| (s, SLUG_LENGTH)),
        "[a-z0-9]{39}(-[a-z0-9]{1,5}){1,3}".prop_map(|s| (s, SLUG_LENGTH)),
        (short_valid_slug(), any::<usize>(), forbidden)
            .prop_map(|(s, at, c)| (insert_inside(&s, at, c), SLUG_CHARSET)),
        short_valid_slug()
            .prop_filter("needs a letter to upper-case", |s| s.bytes().any(|b| b.is_ascii_lowercase()))
            .prop_map(|s| (s.to_uppercase(), SLUG_CHARSET)),
        short_valid_slug().prop_map(|s| (format!("-{s}"), SLUG_HYPHENS)),
        short_valid_slug().prop_map(|s| (format!("{s}-"), SLUG_HYPHENS)),
        "[a-z0-9]{1,18}-{2,3}[a-z0-9]{1,18}".prop_map(|s| (s, SLUG_HYPHENS)),
        select(EXPECTED_RESERVED_SLUGS).prop_map(|s| (s.to_owned(), SLUG_RESERVED)),
        select(EXPECTED_RESERVED_SLUGS).prop_map(|s| (format!(" {s}\n"), SLUG_RESERVED)),
    ]
}

/// One small edit to a string: what near misses are made of.
#[derive(Debug, Clone, Copy)]
enum Edit {
    Insert(&'static str),
    Delete,
    Double,
}

fn apply_edits(base: String, edits: Vec<(Edit, usize)>) -> String {
    edits.into_iter().fold(base, |s, (edit, at)| match edit {
        Edit::Insert(piece) => insert_at(&s, at, piece),
        Edit::Delete if !s.is_empty() => {
            let boundaries: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
            let i = boundaries[at % boundaries.len()];
            let mut s = s;
            s.remove(i);
            s
        }
        Edit::Delete => s,
        Edit::Double => s.repeat(2),
    })
}

/// A valid value with zero to two small edits: about half stay valid, the rest break one
/// or two rules, which is where a parser and a reference can disagree.
fn near_miss(
    valid: impl Strategy<Value = String>,
    inserts: Vec<&'static str>,
) -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        3 => select(inserts).prop_map(Edit::Insert),
        1 => Just(Edit::Delete),
        1 => Just(Edit::Double),
    ];
    let edits = prop_oneof![1 => Just(vec![]), 1 => proptest::collection::vec((edit, any::<usize>()), 1..3)];
    (valid, edits).prop_map(|(base, edits)| apply_edits(base, edits))
}

/// Slugs one or two edits away from valid ones (or valid ones themselves).
pub fn near_miss_slug() -> impl Strategy<Value = String> {
    let slug = prop_oneof![4 => valid_slug(), 1 => select(EXPECTED_RESERVED_SLUGS).prop_map(str::to_owned)];
    near_miss(slug, vec!["-", "--", "Q", " ", "_", "é", "a", "0"])
}

/// Addresses one or two edits away from valid ones (or valid ones themselves).
pub fn near_miss_email() -> impl Strategy<Value = String> {
    near_miss(valid_email(), vec!["@", ".", "..", " ", "\u{7}", "A", "x", "-"])
}

// ---------------------------------------------------------------------------------------
// E-mail addresses
// ---------------------------------------------------------------------------------------

/// A local part in mixed case (the parser lowercases it), non-ASCII letters included.
fn local_part() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9à-öø-ÿÀ-ÖØ-Þ._%+-]{0,30}"
}

fn domain() -> impl Strategy<Value = String> {
    let label = "[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?";
    proptest::collection::vec(label, 2..5).prop_map(|labels| labels.join("."))
}

/// Addresses every rule accepts, in mixed case and with stray outer whitespace; the
/// 64-byte local part and the 254-byte total get their own share of cases.
pub fn valid_email() -> impl Strategy<Value = String> {
    let padding = select(vec!["", " ", "\t", "  \n"]);
    let address = prop_oneof![
        8 => (local_part(), domain()).prop_map(|(l, d)| format!("{l}@{d}")),
        1 => ("[a-z0-9._+-]{64}", domain()).prop_map(|(l, d)| format!("{l}@{d}")),
        1 => "[a-z0-9]{64}@[a-z0-9]{185}\\.com",
    ];
    (padding.clone(), address, padding).prop_map(|(before, a, after)| format!("{before}{a}{after}"))
}

/// An address that breaks exactly one rule (the parser gives one reason for all of them).
pub fn invalid_email() -> impl Strategy<Value = String> {
    let spaces = select(vec![" ", "\t", "\u{a0}", "\u{2003}", "\n"]);
    let controls = select(vec!["\u{0}", "\u{7}", "\u{1b}", "\u{7f}"]);
    prop_oneof![
        (local_part(), domain()).prop_map(|(l, d)| format!("{l}{d}")),
        (local_part(), domain(), any::<usize>(), spaces).prop_map(|(l, d, at, s)| insert_inside(
            &format!("{l}@{d}"),
            at,
            s
        )),
        (local_part(), domain(), any::<usize>(), controls).prop_map(|(l, d, at, c)| insert_at(
            &format!("{l}@{d}"),
            at,
            c
        )),
        domain().prop_map(|d| format!("@{d}")),
        ("[a-z0-9]{65,80}", domain()).prop_map(|(l, d)| format!("{l}@{d}")),
        (local_part(), "[a-z0-9-]{1,20}").prop_map(|(l, d)| format!("{l}@{d}")),
        (local_part(), domain()).prop_map(|(l, d)| format!("{l}@.{d}")),
        (local_part(), domain()).prop_map(|(l, d)| format!("{l}@{d}.")),
        (local_part(), domain(), any::<usize>()).prop_map(|(l, d, at)| {
            let dots: Vec<usize> = d.match_indices('.').map(|(i, _)| i).collect();
            let i = dots[at % dots.len()];
            format!("{l}@{}.{}", &d[..i], &d[i..])
        }),
        (local_part(), domain(), domain()).prop_map(|(l, d1, d2)| format!("{l}@{d1}@{d2}")),
        "[a-z0-9]{64}@[a-z0-9]{186,200}\\.com",
    ]
}

// ---------------------------------------------------------------------------------------
// Passwords
// ---------------------------------------------------------------------------------------

/// Words every breach corpus starts with, as the password policy's doc names them.
pub const BREACHED_WORDS: &[&str] =
    &["password", "qwerty", "letmein", "welcome", "iloveyou", "admin", "dotmac", "dragon", "monkey"];

/// Two letters no breached word contains (so the letters are never all breached words),
/// neither equal nor consecutive (so the password neither repeats one character nor runs).
const ANCHORS: &[&str] = &["zj", "xz", "jx", "zx", "жz", "λj", "zλ", "jж"];

/// The account a generated valid password belongs to. Its local part starts with `a`–`h`,
/// letters that valid passwords never contain, so they never contain the e-mail either.
pub fn password_owner() -> impl Strategy<Value = String> {
    ("[a-h][a-h0-4._+-]{2,15}", domain()).prop_map(|(l, d)| format!("{l}@{d}").to_lowercase())
}

/// A password every rule accepts (for an account from `password_owner`), from 12 to 128
/// characters, the two boundaries included on purpose; none of its characters lowercase to
/// `a`–`h`.
pub fn valid_password() -> impl Strategy<Value = String> {
    let body = prop_oneof![
        6 => "[i-zI-Z5-9 !#$%&*=?~ß-ÿα-ωа-я]{10,126}",
        1 => "[i-zI-Z5-9 !#$%&*=?~ß-ÿα-ωа-я]{10}",
        1 => "[i-zI-Z5-9 !#$%&*=?~ß-ÿα-ωа-я]{126}",
    ];
    (body, any::<usize>(), select(ANCHORS)).prop_map(|(b, at, anchor)| insert_at(&b, at, anchor))
}

/// A password made of breached words, but with other letters too: accepted (for an account
/// whose local part is `a.b`, which holds a `.` these never do).
pub fn password_with_breached_words_and_more() -> impl Strategy<Value = String> {
    (proptest::collection::vec((breached_word(), "[0-9!#$%&*]{0,3}"), 1..4), any::<usize>(), select(ANCHORS))
        .prop_map(|(words, at, anchor)| {
            let stems: String = words.into_iter().map(|(w, sep)| w + &sep).collect();
            let padded = format!("{stems:0<12}");
            insert_at(&padded, at, anchor)
        })
}

/// A breached word in lower, upper or title case (the policy compares in lower case).
fn breached_word() -> impl Strategy<Value = String> {
    select(BREACHED_WORDS).prop_flat_map(|w| select(vec![w.to_owned(), w.to_uppercase(), capitalised(w)]))
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Whose password the refused-password generators are checked against: no generated
/// breached, repeated or running password contains `a.b`.
pub const UNRELATED_OWNER: &str = "a.b@example.com";

/// A password that breaks exactly one rule (for `UNRELATED_OWNER`, unless the case carries
/// its own owner), with the reason the policy must give.
pub fn invalid_password() -> impl Strategy<Value = (String, String, &'static str)> {
    let unrelated = |s: BoxedStrategy<String>, reason: &'static str| {
        s.prop_map(move |p| (p, UNRELATED_OWNER.to_owned(), reason)).boxed()
    };
    let letter = select(vec!['j', 'x', 'z', 'J', 'X', 'Z', 'ж', 'λ']);
    prop_oneof![
        unrelated("\\PC{0,11}".boxed(), PASSWORD_LENGTH),
        unrelated("\\PC{11}".boxed(), PASSWORD_LENGTH),
        unrelated("\\PC{129}".boxed(), PASSWORD_LENGTH),
        unrelated("\\PC{130,200}".boxed(), PASSWORD_LENGTH),
        // The owner's local part, in any case, inside an otherwise valid password.
        (password_owner(), "[i-zI-Z5-9 !#$%&*=?~]{8,100}", any::<usize>(), any::<bool>(), select(ANCHORS))
            .prop_map(|(owner, body, at, upper, anchor)| {
                let local = owner.split_once('@').map(|(l, _)| l).unwrap_or_default();
                let local = if upper { local.to_uppercase() } else { local.to_owned() };
                let password = insert_at(&format!("{anchor}{body}"), at, &local);
                (password, owner, PASSWORD_EMAIL)
            })
            .boxed(),
        // The whole address as the password (long enough to pass the length rule).
        valid_email()
            .prop_map(|raw| raw.trim().to_owned())
            .prop_filter("the length rule comes first", |e| (12..=128).contains(&e.chars().count()))
            .prop_map(|e| (e.clone(), e.to_lowercase(), PASSWORD_EMAIL))
            .boxed(),
        unrelated(breached_words_only().boxed(), PASSWORD_BREACHED),
        unrelated(
            // One letter, each copy in either case: still one character once lowercased.
            (letter, proptest::collection::vec(any::<bool>(), 12..=128))
                .prop_map(|(c, upper)| {
                    let (lower, capital): (String, String) =
                        (c.to_lowercase().collect(), c.to_uppercase().collect());
                    upper.iter().map(|&u| if u { capital.as_str() } else { lower.as_str() }).collect()
                })
                .boxed(),
            PASSWORD_REPEATS,
        ),
        unrelated(ascending_run().boxed(), PASSWORD_SEQUENCE),
    ]
}

/// Breached words (any case) with digits and symbols between and around them, padded with
/// digits to 12 characters: the letters are nothing but breached words.
fn breached_words_only() -> impl Strategy<Value = String> {
    ("[0-9!#$%&* _-]{0,3}", proptest::collection::vec((breached_word(), "[0-9!#$%&* _-]{0,4}"), 1..6))
        .prop_map(|(lead, words)| {
            let joined: String = words.into_iter().map(|(w, sep)| w + &sep).collect();
            format!("{:7<12}", lead + &joined)
        })
}

/// Consecutive code points, 12 to 128 of them, in scripts where lowercasing keeps them
/// consecutive: Latin (any case), Greek, and CJK (the long runs).
fn ascending_run() -> impl Strategy<Value = String> {
    let run = |start: u32, n: usize| (start..start + n as u32).filter_map(char::from_u32).collect::<String>();
    prop_oneof![
        (12..=26usize).prop_flat_map(|n| (0..=(26 - n) as u32, Just(n), any::<bool>())).prop_map(
            move |(offset, n, upper)| {
                let s = run('a' as u32 + offset, n);
                if upper { s.to_uppercase() } else { s }
            }
        ),
        (12..=25usize)
            .prop_flat_map(|n| (0..=(25 - n) as u32, Just(n)))
            .prop_map(move |(offset, n)| run('α' as u32 + offset, n)),
        (0x4e00..0x9f00u32, 12..=128usize).prop_map(move |(start, n)| run(start, n)),
    ]
}
