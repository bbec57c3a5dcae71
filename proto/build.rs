//! Compiles `proto/vishwa.proto` with the vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .bytes(".vishwa.v1")
        .compile_with_config(config, &["proto/vishwa.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/vishwa.proto");
    Ok(())
}
