//! The ccplant operator library.

pub mod crdgen;

pub use crdgen::crd_documents;
