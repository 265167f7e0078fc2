//! The built `herald-deliverer` binary refuses a bad setting at start, naming it, instead of
//! running with a guess. (Building this test also builds the binary the fault tests run.)

use std::process::Command;

#[test]
fn a_bad_setting_stops_the_binary_and_names_the_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-deliverer"))
        .env("HERALD_LOG_FORMAT", "xml")
        .output()
        .expect("the binary runs");
    assert!(!out.status.success(), "must exit non-zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HERALD_LOG_FORMAT"), "stderr: {stderr}");
}
