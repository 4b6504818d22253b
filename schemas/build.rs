//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/trackhrs/events/v1/envelope.proto",
        "proto/trackhrs/agent/v1/ingest.proto",
        "proto/trackhrs/org/v1/org.proto",
        "proto/trackhrs/activity/v1/activity.proto",
        "proto/trackhrs/ops/v1/ops.proto",
        "proto/trackhrs/work/v1/work.proto",
        "proto/trackhrs/pay/v1/pay.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("trackhrs_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
