//! The org's privacy policy, applied on the machine: a title or URL the
//! policy forbids is dropped before the span is stored locally, and again
//! before a batch leaves the machine (the policy may have become stricter
//! while spans waited in the outbox).

use crate::heartbeat::SpanData;

/// What the agent may keep of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Window titles may be captured.
    pub capture_titles: bool,
    /// URLs may be captured.
    pub capture_urls: bool,
}

impl Policy {
    /// The policy in force until the org's is known: keep neither titles nor
    /// URLs (an agent started offline, before it ever reached the gateway,
    /// must not collect what the org may forbid).
    pub const STRICT: Self = Self {
        capture_titles: false,
        capture_urls: false,
    };

    /// `data` with what the policy forbids removed.
    pub fn apply(&self, data: &mut SpanData) {
        if !self.capture_titles {
            data.title.clear();
        }
        if !self.capture_urls {
            data.url = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_fields_are_dropped() {
        let data = SpanData {
            app: "firefox".into(),
            title: "Payroll - Mozilla Firefox".into(),
            url: Some("https://payroll.example/".into()),
            active: true,
        };
        let mut strict = data.clone();
        Policy::STRICT.apply(&mut strict);
        assert_eq!(
            (strict.app.as_str(), strict.title.as_str(), strict.url),
            ("firefox", "", None)
        );
        let mut titles = data.clone();
        Policy {
            capture_titles: true,
            capture_urls: false,
        }
        .apply(&mut titles);
        assert_eq!(
            (titles.title.as_str(), titles.url),
            (data.title.as_str(), None)
        );
        let mut all = data.clone();
        Policy {
            capture_titles: true,
            capture_urls: true,
        }
        .apply(&mut all);
        assert_eq!(all, data);
    }
}
