//! Leases in JetStream KV: one holder at a time runs a scheduled job.
//!
//! A lease is a key of the lease bucket whose value names its holder. It is
//! taken with a create (refused while the key exists) and renewed with an
//! update that expects the revision the holder wrote last (refused once
//! anyone else wrote it); the bucket's age limit (the lease's time to live) expires a
//! lease its holder stopped renewing, so another replica takes it over. A
//! holder that loses it (a renewal refused) stops before its next step.

use async_nats::jetstream::{self, kv};

use crate::error::StoreError;
use crate::store::EventStore;

/// One replica's hold on a named lease.
pub struct Lease {
    bucket: kv::Store,
    name: String,
    holder: String,
    revision: Option<u64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .field("held", &self.revision.is_some())
            .finish()
    }
}

impl Lease {
    /// The lease `name` as `holder` would hold it (not taken yet).
    pub async fn open(store: &EventStore, name: &str, holder: &str) -> Result<Self, StoreError> {
        let js = jetstream::new(store.client().clone());
        let bucket = js
            .get_key_value(&store.config().lease_bucket)
            .await
            .map_err(|e| StoreError::Provision(format!("lease bucket: {e}")))?;
        Ok(Self {
            bucket,
            name: name.to_owned(),
            holder: holder.to_owned(),
            revision: None,
        })
    }

    /// Takes the lease or renews it: whether this holder has it now (for
    /// the lease's time to live from now at least, unless the server's clock says
    /// otherwise).
    pub async fn hold(&mut self) -> bool {
        if let Some(revision) = self.revision {
            match self
                .bucket
                .update(&self.name, self.holder.clone().into(), revision)
                .await
            {
                Ok(next) => {
                    self.revision = Some(next);
                    return true;
                }
                Err(_) => self.revision = None,
            }
        }
        match self
            .bucket
            .create(&self.name, self.holder.clone().into())
            .await
        {
            Ok(revision) => {
                self.revision = Some(revision);
                true
            }
            Err(_) => false,
        }
    }
}
