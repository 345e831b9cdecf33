//! One test binary (one link) for everything that talks to the emulator.

mod interop;
mod isolation;
mod lambda_events;
mod onboarding;
mod provisioner;
mod readiness;
mod sessions;
mod store;
