//! Architecture invariants that a build would not catch by itself.

use std::path::PathBuf;

fn manifest(krate: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(krate).join("Cargo.toml");
    std::fs::read_to_string(p).unwrap()
}

fn dependencies(krate: &str) -> Vec<String> {
    let text = manifest(krate);
    let deps = text.split("[dependencies]").nth(1).unwrap_or("");
    let deps = deps.split("\n[").next().unwrap_or("");
    deps.lines()
        .filter_map(|l| l.split(['.', '=', ' ']).next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn domain_and_crypto_do_no_io() {
    for krate in ["haven-domain", "haven-crypto", "haven-audit"] {
        let deps = dependencies(krate);
        assert!(!deps.is_empty(), "{krate}: could not read dependencies");
        for forbidden in [
            "sqlx",
            "axum",
            "tokio",
            "hyper",
            "reqwest",
            "tracing",
            "getrandom",
            "haven-store",
            "haven-app",
            "haven-http",
        ] {
            assert!(!deps.iter().any(|d| d == forbidden), "{krate} must not depend on {forbidden}");
        }
    }
}

#[test]
fn only_the_binary_uses_anyhow() {
    for krate in ["haven-domain", "haven-crypto", "haven-audit", "haven-store", "haven-app", "haven-http"] {
        assert!(!dependencies(krate).iter().any(|d| d == "anyhow"), "{krate} uses anyhow");
    }
}

#[test]
fn unsafe_code_is_forbidden_in_every_crate() {
    let root =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml")).unwrap();
    assert!(root.contains("unsafe_code = \"forbid\""));
    for krate in
        ["haven-domain", "haven-crypto", "haven-store", "haven-app", "haven-http", "haven", "haven-testkit"]
    {
        assert!(
            manifest(krate).contains("[lints]\nworkspace = true"),
            "{krate} does not inherit the workspace lints"
        );
    }
}
