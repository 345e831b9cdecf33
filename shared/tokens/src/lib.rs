//! Identity primitives with no transport in them, so HTTP handlers, queue jobs, the Lambda
//! authorizer and the key rotation all share one implementation: the JWT key set (load,
//! reload, rotate), issuing and verifying tokens, revoking them, password hashing, and the
//! single-use invitation tokens.

mod invitation;
mod jwt;
mod license;
mod passwords;

pub use invitation::{INVITATION_TOKEN_LENGTH, InvitationToken, RandomnessError};
pub use jwt::*;
pub use license::{Entitlements, LICENSE_TYP, LicenseClaims, license_audience};
pub use passwords::{PasswordError, hash_password, verify_password};
