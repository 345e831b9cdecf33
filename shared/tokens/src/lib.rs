//! Identity primitives with no transport in them, so HTTP handlers, queue jobs, the Lambda
//! authorizer and the key rotation all share one implementation: the JWT key set (load,
//! reload, rotate), issuing and verifying tokens, revoking them, and password hashing.

mod jwt;
mod passwords;

pub use jwt::*;
pub use passwords::{PasswordError, hash_password, verify_password};
