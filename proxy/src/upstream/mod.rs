//! Clusters, endpoints, load balancing and connection pools.
pub mod cluster;
pub mod dns;
pub mod hash;
pub mod health_check;
pub mod lb;
pub mod outlier;
pub mod pool;
pub mod priority;

pub use cluster::{Cluster, Endpoint, EndpointSet};
