//! OpenAI wire types: what clients send and receive, field for field. Plain serde data with no
//! behaviour beyond small conversions; nothing below `api` sees these types.

pub mod chat;
pub mod common;
pub mod completion;
