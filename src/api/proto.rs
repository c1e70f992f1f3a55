//! The generated protobuf types and services, nested as their packages are.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod prism {
    tonic::include_proto!("prism");

    pub mod launcher {
        tonic::include_proto!("prism.launcher");

        pub mod v1 {
            tonic::include_proto!("prism.launcher.v1");
        }
    }
}

/// The encoded descriptors of every service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("prism_descriptor");
