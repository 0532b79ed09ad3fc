//! Compiles the `.proto` files under `proto/` without a system `protoc`.
//!
//! `protox` parses the files into a `FileDescriptorSet`; its encoded bytes are
//! written to `OUT_DIR/jumpstarter.fds.pb` (exposed as `FILE_DESCRIPTOR_SET`),
//! and `tonic-prost-build` generates messages, clients and servers from it.

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use prost::Message as _;

/// File name, inside `OUT_DIR`, of the encoded descriptor set.
const DESCRIPTOR_SET_FILE: &str = "jumpstarter.fds.pb";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = manifest_dir.join("proto");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut protos = Vec::new();
    collect_protos(&proto_root, &mut protos)?;
    protos.sort();
    if protos.is_empty() {
        return Err(format!("no .proto files under {}", proto_root.display()).into());
    }
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let descriptor_set = protox::Compiler::new([&proto_root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(&protos)?
        .file_descriptor_set();
    fs::write(
        out_dir.join(DESCRIPTOR_SET_FILE),
        descriptor_set.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptor_set)?;
    Ok(())
}

/// Appends every `.proto` file below `dir` (recursively) to `out`.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
