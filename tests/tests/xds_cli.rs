//! `outrigger-xds validate DIR`: every error with file, document and field; exit 1 if any.
use std::process::Command;

use outrigger_tests::proxy::{temp_dir, xds_binary};

#[test]
fn validate_accepts_bookinfo_and_reports_every_error_with_file_document_and_field() {
    let bookinfo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../xds/testdata/bookinfo");
    let ok = Command::new(xds_binary()).arg("validate").arg(&bookinfo).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    let dir = temp_dir();
    std::fs::write(
        dir.join("a.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: s }\nspec: { hosts: [s.example.com], ports: [{ number: 80, name: http, protokol: HTTP }] }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ok }\nspec: { hosts: [s.example.com], http: [{ route: [{ destination: { host: s.example.com } }] }] }\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: bad }\nspec: { host: s.example.com, trafficPolicy: { connectionPool: {} } }\n",
    )
    .unwrap();
    let out = Command::new(xds_binary()).arg("validate").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.yaml: document 0 (ServiceEntry default/s): spec.ports[0]") && err.contains("protokol"),
        "{err}"
    );
    assert!(
        err.contains("b.yaml: document 1 (DestinationRule default/bad): spec.trafficPolicy")
            && err.contains("connectionPool"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_a_directory_with_errors_at_start() {
    let dir = temp_dir();
    std::fs::write(dir.join("x.yaml"), "apiVersion: v1\nkind: Service\nmetadata: { name: s }\nspec: {}\n").unwrap();
    let out = Command::new(xds_binary())
        .args(["serve", "--config-dir"])
        .arg(&dir)
        .args(["--xds-port", "0", "--monitor-port", "0", "--bind", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x.yaml: document 0"));
    let _ = std::fs::remove_dir_all(&dir);
}
