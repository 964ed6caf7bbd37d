//! The client against the fake GitHub over real HTTP: exact requests, parsed results, error
//! classes, the App flow.

mod app;
mod common;
mod errors;
mod lookups;
mod observability;
mod operations;
