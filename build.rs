//! Compiles the protobuf contracts under `proto/` with a vendored protoc, so that a bare machine
//! needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded, so setting the variable cannot race.
    std::env::set_var("PROTOC", protoc);
    let protos = [
        "proto/prism/launcher/launcher.proto",
        "proto/prism/control_plane.proto",
        "proto/prism/launcher/v1/launcher_admin.proto",
    ];
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // prost's codec, with a message that cannot be decoded answered as INVALID_ARGUMENT.
        .codec_path("crate::api::codec::ProtoCodec")
        .file_descriptor_set_path(out_dir.join("prism_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
