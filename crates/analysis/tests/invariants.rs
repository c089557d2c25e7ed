//! Architecture invariant: `analysis` is pure CPU; no async runtime, Redis, database or web
//! framework among its normal dependencies.

#[test]
fn no_io_crates_among_dependencies() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("read own manifest");
    let deps: String = manifest
        .split("\n[")
        .filter(|section| section.starts_with("dependencies]"))
        .collect();
    assert!(!deps.is_empty(), "manifest has a [dependencies] section");
    for forbidden in [
        "tokio", "redis", "diesel", "actix", "bb8", "reqwest", "futures",
    ] {
        assert!(
            !deps.contains(forbidden),
            "analysis must stay pure: {forbidden} found in [dependencies]"
        );
    }
}
