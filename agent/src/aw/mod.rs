//! ActivityWatch compatibility: its data model kept locally ([`store`]) and
//! its REST API ([`api`]), and the window and AFK timelines combined into
//! the device's spans ([`combine`]), so ActivityWatch's watchers and clients report to
//! the TrackHrs agent unchanged.

pub mod api;
pub mod combine;
pub mod store;
