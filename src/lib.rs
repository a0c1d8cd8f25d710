//! arca: an encrypted, content-addressed, deduplicating archive store for
//! SaaS account data.
//!
//! Modules follow the data's path: [`chunk`] cuts content, [`crypto`] names
//! and seals it, [`format`] lays out every stored byte (format-spec.md),
//! [`backend`] stores files, [`index`] caches where blobs live,
//! [`repository`] and [`session`] tie them together, and [`commands`] holds
//! one module per operation. The `arca` binary is a thin layer over this.

pub mod backend;
pub mod chunk;
pub mod codec;
pub mod crypto;
pub mod delta;
pub mod error;
pub mod export;
pub mod format;
pub mod id;
pub mod index;
pub mod keycache;
pub mod lock;
pub mod markset;
pub mod repository;
pub mod retention;
pub mod session;
pub mod snapcache;

pub use error::{Error, Result};
pub mod commands;
pub mod demo;
#[doc(hidden)]
pub mod testutil;
