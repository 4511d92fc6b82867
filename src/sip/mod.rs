//! SIP: message model, transactions, dialogs, the user agent core and the transport.

pub mod dialog;
pub mod digest;
pub mod message;
pub mod routing;
pub mod transaction;
pub mod transport;
pub mod trust;
pub mod ua;
