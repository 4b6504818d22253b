//! ActivityWatch compatibility: its data model kept locally ([`store`]) and
//! its REST API ([`api`]), and the window and AFK timelines combined into
//! the device's spans ([`combine`]), so ActivityWatch's watchers and clients report to
//! the TrackHrs agent unchanged. The raw timelines themselves are synced to
//! the platform as well, with deletions as retractions ([`timeline`]).

pub mod api;
pub mod combine;
pub mod store;
pub mod timeline;
