//! Protobuf wire types generated from `proto/`: the stored event envelope, the
//! agent upload and the organization API. Wire types stay at the edges (`nats`, `gateway`); the domain has
//! its own types.

/// Stored event commits and envelopes (`trackhrs.events.v1`).
pub mod events {
    /// Version 1 of the event envelope.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("trackhrs.events.v1");
    }
}

/// Agent uploads (`trackhrs.agent.v1`).
pub mod agent {
    /// Version 1 of the agent upload.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("trackhrs.agent.v1");
    }
}

/// Identity and organization administration (`trackhrs.org.v1`).
pub mod org {
    /// Version 1 of the organization API.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("trackhrs.org.v1");
    }
}

/// Dashboards and classification rules (`trackhrs.activity.v1`).
pub mod activity {
    /// Version 1 of the activity API.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("trackhrs.activity.v1");
    }
}

/// The operations API (read models, dead letters).
pub mod ops {
    /// Version 1 of the operations API.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("trackhrs.ops.v1");
    }
}

/// Teams, projects, project time and timesheets (`trackhrs.work.v1`).
pub mod work {
    /// Version 1 of the work API.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("trackhrs.work.v1");
    }
}

/// Leave and payroll (`trackhrs.pay.v1`).
pub mod pay {
    /// Version 1 of the pay API.
    #[allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("trackhrs.pay.v1");
    }
}

/// Encoded `FileDescriptorSet` of every .proto here, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/trackhrs_descriptor.bin"));
