//! Compiles `protos/` with protox (pure Rust), so no `protoc` is needed.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../protos");
    let files = ["user.proto", "todo.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", protos.join(file).display());
    }

    let mut compiler = protox::Compiler::new([&protos])?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(files)?;
    let descriptors = compiler.file_descriptor_set();

    // Reflection on the gateway serves this exact set.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("todoapp_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
