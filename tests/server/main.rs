//! Black-box tests against a real ferroserve: a server bound in-process on
//! `127.0.0.1:0` (or the binary itself, for signals and flags), called with
//! tonic clients generated from our proto/.

mod binary;
mod classify;
mod control_flow;
mod errors;
mod external_data;
mod harness;
mod health_reflection;
mod lifecycle;
mod limits;
mod metadata_status;
mod predict;
mod rest;
mod savedmodel;
mod security;
mod shapes;
mod strings;
mod warmup;
