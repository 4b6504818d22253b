//! Upload quotas: token buckets of bytes, one per device and one per org,
//! kept by each replica (with N replicas behind a balancer, a device gets
//! up to N times its rate). A batch is charged to both or to neither; one
//! over either is refused with how long to wait, and nothing is stored. A
//! batch charged but then not stored (refused, failed, a duplicate) is
//! refunded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A rate and the burst a quiet bucket may take at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bytes per second, on average.
    pub bytes_per_sec: f64,
    /// Bytes at once after a quiet time (the bucket's size).
    pub burst_bytes: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: Rate, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * rate.bytes_per_sec;
        self.tokens = (self.tokens + earned).min(rate.burst_bytes);
        self.at = now;
    }

    /// How long until `bytes` fit.
    fn wait_for(&self, bytes: f64, rate: Rate) -> Duration {
        if self.tokens >= bytes {
            Duration::ZERO
        } else if rate.bytes_per_sec <= 0.0 {
            Duration::MAX
        } else {
            Duration::from_secs_f64((bytes - self.tokens) / rate.bytes_per_sec)
        }
    }
}

/// Which quota refused a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The device's own.
    Device,
    /// Its organization's, shared by its devices.
    Org,
}

/// The buckets of one replica.
#[derive(Clone)]
pub struct Quotas {
    device: Rate,
    org: Rate,
    buckets: moka::sync::Cache<String, Arc<Mutex<Bucket>>>,
}

impl Quotas {
    /// Quotas of `device` per device and `org` per organization.
    pub fn new(device: Rate, org: Rate) -> Self {
        Self {
            device,
            org,
            // A bucket idle for an hour is full again: forgetting it
            // changes nothing.
            buckets: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    fn bucket(&self, key: String, rate: Rate) -> Arc<Mutex<Bucket>> {
        self.buckets.get_with(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: rate.burst_bytes,
                at: Instant::now(),
            }))
        })
    }

    /// Charges `bytes` to the device's and the org's buckets, or to
    /// neither: then says which refused and how long to wait.
    pub fn charge(&self, org: &str, device: &str, bytes: usize) -> Result<(), (Over, Duration)> {
        let bytes = bytes as f64;
        let now = Instant::now();
        let device_bucket = self.bucket(format!("d:{org}/{device}"), self.device);
        let org_bucket = self.bucket(format!("o:{org}"), self.org);
        // Always device, then org: no two calls wait on each other in
        // opposite orders.
        let mut d = device_bucket.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = org_bucket.lock().unwrap_or_else(|e| e.into_inner());
        d.refill(self.device, now);
        o.refill(self.org, now);
        let device_wait = d.wait_for(bytes, self.device);
        let org_wait = o.wait_for(bytes, self.org);
        if !device_wait.is_zero() {
            return Err((Over::Device, device_wait));
        }
        if !org_wait.is_zero() {
            return Err((Over::Org, org_wait));
        }
        d.tokens -= bytes;
        o.tokens -= bytes;
        Ok(())
    }
}

impl Quotas {
    /// Gives back what [`Quotas::charge`] took for a batch that was not
    /// stored (refused, failed, or stored before).
    pub fn refund(&self, org: &str, device: &str, bytes: usize) {
        for (key, rate) in [
            (format!("d:{org}/{device}"), self.device),
            (format!("o:{org}"), self.org),
        ] {
            if let Some(bucket) = self.buckets.get(&key) {
                let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
                b.tokens = (b.tokens + bytes as f64).min(rate.burst_bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_charged_to_both_buckets_or_to_neither() {
        let quotas = Quotas::new(
            Rate {
                bytes_per_sec: 100.0,
                burst_bytes: 1000.0,
            },
            Rate {
                bytes_per_sec: 100.0,
                burst_bytes: 1500.0,
            },
        );
        quotas.charge("acme", "a", 600).unwrap();
        let (over, wait) = quotas.charge("acme", "a", 600).unwrap_err();
        assert_eq!(over, Over::Device);
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        // Another device has its own bucket, but shares the org's.
        quotas.charge("acme", "b", 600).unwrap();
        let (over, _) = quotas.charge("acme", "c", 600).unwrap_err();
        assert_eq!(over, Over::Org);
        // The refused charge took nothing: c fits once the org has room.
        quotas.charge("acme", "c", 250).unwrap();
        // Another org is untouched.
        quotas.charge("globex", "a", 1000).unwrap();
        // A refund gives room back.
        quotas.refund("globex", "a", 1000);
        quotas.charge("globex", "a", 1000).unwrap();
    }
}
