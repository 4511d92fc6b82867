//! callbridge: a SIP/RTP media server appliance driven by the CUAE Media Control vocabulary.
//!
//! Layers (see docs/ARCHITECTURE.md): `api` → `control` → {`sip::ua`, `engine`} →
//! {`sip::dialog` → `sip::transaction` → `sip::message`, `sdp`}. Lower layers never call
//! upward; they return events.

pub mod agent_gateway;
pub mod api;
pub mod app;
pub mod control;
pub mod ctl;
pub mod engine;
/// Entry points for the fuzz targets of `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod heap;
mod idmap;
pub mod media;
pub mod mixer;
pub mod sdp;
mod shrink;
pub mod sip;
pub mod store;
mod text;
mod udp_batch;
