pub mod access_log;
pub mod stats;
