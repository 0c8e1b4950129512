//! Istio's API as the control plane reads it: Kubernetes-style YAML documents, strictly typed
//! (an unknown field is an error naming it, never ignored), loaded from a directory.
pub mod diff;
pub mod load;
pub mod model;
pub mod policy;
mod validate_policy;

pub use load::{load_dir, DirLoader, LoadError, Registry};
