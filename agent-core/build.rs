fn main() {
    // OpAMP messages (src/opamp/): the vendored upstream .proto files.
    println!("cargo:rerun-if-changed=proto/opamp");
    prost_build::compile_protos(&["proto/opamp/v1/opamp.proto"], &["proto"])
        .expect("compiling proto/opamp (is protoc installed? Debian: protobuf-compiler)");
}
