//! Authorization.
pub mod actions;
