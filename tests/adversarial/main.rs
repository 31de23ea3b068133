//! Adversarial suites (short CI form): timing-sensitive, so they run in a test
//! binary of their own, one at a time, away from the other integration tests.

// Test helpers are shared between modules, not a public API.
#![allow(unreachable_pub, missing_docs, missing_debug_implementations)]

#[path = "../it/common/mod.rs"]
mod common;
mod suites;

/// Held by each suite for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
