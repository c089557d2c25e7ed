//! Fuzz target: `worker-config.yaml` (`routing::WorkerConfig::from_yaml_str`): any text gives a validated config
//! or an error (with a position when it has one), never a panic; a valid config answers the effective-rule and
//! profile look-ups the coordinator makes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use routing::WorkerConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match WorkerConfig::from_yaml_str(text, "fuzz.yaml") {
        Ok(cfg) => {
            let _ = cfg.effective("cowrieprocessor.workers.longtail_analysis", None);
            let _ = cfg.effective("x", Some("longtail"));
            let _ = cfg.profile("general", "fuzz.yaml");
            let _ = cfg.specs_for("celery@host").count();
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = e.position();
        }
    }
});
