//! One test binary (one link) for everything that talks to the emulator.

mod authorizer;
mod billing;
mod catalog;
mod first_deploy;
mod iam;
mod identity_attacks;
mod interop;
mod invitations;
mod isolation;
mod lambda_events;
mod lifecycle;
mod machine_tokens;
mod onboarding;
mod partners;
mod payments;
mod provisioner;
mod readiness;
mod sessions;
mod signing_keys;
mod store;
mod task_definitions;
mod task_lifecycle;
mod throttling;
mod usage;
mod users_and_roles;
