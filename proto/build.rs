//! Compiles `proto/vishwa.proto` with the vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let descriptors =
        std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("vishwa_descriptor.bin");
    tonic_prost_build::configure()
        .bytes(".vishwa.v1")
        // For server reflection: clients that never compiled the protos can ask for them.
        .file_descriptor_set_path(&descriptors)
        .compile_with_config(config, &["proto/vishwa.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/vishwa.proto");
    Ok(())
}
