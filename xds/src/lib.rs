//! outrigger-xds: a small control plane. It reads Istio's API from a directory
//! ([`istio`]), generates Envoy resources per proxy ([`generate`]) and serves them over ADS
//! ([`server`]), with monitoring on its own port.
pub mod generate;
pub mod istio;
pub mod server;

#[cfg(test)]
mod layering {
    /// The control plane shares only the API layer with the data plane (issue 8): a dependency on
    /// the proxy crate, direct or through the API crate, would make them one build again.
    #[test]
    fn control_plane_does_not_depend_on_the_data_plane() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for manifest in [root.join("Cargo.toml"), root.join("../api/Cargo.toml")] {
            let text = std::fs::read_to_string(&manifest).unwrap();
            assert!(!text.contains("outrigger-proxy"), "{} depends on outrigger-proxy", manifest.display());
        }
    }
}
