//! Generates the gRPC code of `proto/ase.proto`. `protox` parses the file in Rust, so building
//! needs no system `protoc`.

use std::path::PathBuf;

fn main() {
    let proto_dir = PathBuf::from("proto");
    let proto_file = proto_dir.join("ase.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());
    let descriptors = match protox::compile([&proto_file], [&proto_dir]) {
        Ok(fds) => fds,
        Err(e) => panic!("cannot compile {}: {e:?}", proto_file.display()),
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)
    {
        panic!("cannot generate code for {}: {e}", proto_file.display());
    }
}
