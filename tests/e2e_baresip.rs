//! placeholder while building
mod common;
