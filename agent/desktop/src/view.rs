//! What the window shows, made from the agent's [`Status`] and the local
//! [`Summary`] of today: plain values and ready-made sentences, so the page
//! only lays them out.

use serde::Serialize;
use trackhrs_agent::runner::{Status, UploadState};
use trackhrs_agent::today::Summary;

/// The whole window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// Capture is paused.
    pub paused: bool,
    /// One word or a short sentence: "Tracking", "Paused", ...
    pub state: String,
    /// The span being recorded.
    pub current: Option<Current>,
    /// Today.
    pub today: Today,
    /// The privacy policy in force, in words.
    pub policy: String,
    /// Uploads, in words.
    pub upload: String,
    /// Something the employee must act on (a refused device), if any.
    pub alert: Option<String>,
}

/// The span being recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Current {
    /// Application.
    pub app: String,
    /// Window title (empty when the policy forbids titles).
    pub title: String,
    /// "active" or "idle".
    pub activity: String,
    /// How long so far, in words.
    pub duration: String,
}

/// Today's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Today {
    /// Active time, in words.
    pub active: String,
    /// Idle time, in words.
    pub idle: String,
    /// Active time per category, the most first.
    pub categories: Vec<CategoryRow>,
}

/// One category's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CategoryRow {
    /// The path, e.g. "Work / Programming".
    pub name: String,
    /// Time, in words.
    pub time: String,
    /// Share of today's active time, 0 to 100.
    pub percent: u8,
    /// Productivity score, -100 to 100.
    pub score: i32,
}

/// A duration in words: "45 s", "12 min", "2 h 05 min".
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {:02} min", s / 3600, s / 60 % 60),
    }
}

/// The view of `status` and `today` at `now_ms`; `clock` shows a Unix ms
/// time of day in the user's time zone.
pub fn view(status: &Status, today: &Summary, now_ms: i64, clock: impl Fn(i64) -> String) -> View {
    let state = if status.paused {
        "Paused: nothing is recorded".to_owned()
    } else if let Some(e) = &status.capture_error {
        format!("Cannot observe the desktop: {e}")
    } else if let Some(behind) = status.clock_behind_ms {
        format!(
            "The clock went back {}: recording resumes when it catches up",
            duration(behind)
        )
    } else {
        "Tracking".to_owned()
    };
    let current = status.current.as_ref().map(|e| Current {
        app: e.data.app.clone(),
        title: e.data.title.clone(),
        activity: if e.data.active { "active" } else { "idle" }.to_owned(),
        duration: duration(now_ms - e.start_ms),
    });
    let policy = match status.policy {
        None => "Not known yet (the platform was not reached): no window titles or URLs are kept until it is".to_owned(),
        Some(p) => format!(
            "Window titles {} · URLs {}",
            if p.capture_titles { "recorded" } else { "not recorded" },
            if p.capture_urls { "recorded" } else { "not recorded" },
        ),
    };
    let waiting = match status.waiting {
        1 => "1 span waits on this computer".to_owned(),
        n => format!("{n} spans wait on this computer"),
    };
    let (upload, alert) = match &status.upload {
        UploadState::Starting => (format!("Connecting · {waiting}"), None),
        UploadState::UpToDate { at_ms } if status.waiting == 0 => {
            (format!("Uploaded at {}", clock(*at_ms)), None)
        }
        UploadState::UpToDate { at_ms } => {
            (format!("Uploaded at {} · {waiting}", clock(*at_ms)), None)
        }
        UploadState::Retrying { error } => (format!("Offline · {waiting} ({error})"), None),
        UploadState::Refused { reason } => (
            format!("Uploads stopped · {waiting}"),
            Some(format!(
                "This device was refused by TrackHrs ({reason}). Uploads stopped; your activity is kept on this computer. Ask your admin to enroll it again."
            )),
        ),
    };
    let total = today.active_ms.max(1);
    let categories = today
        .categories
        .iter()
        .map(|c| CategoryRow {
            name: c.category.join(" / "),
            time: duration(c.active_ms),
            percent: (c.active_ms * 100 / total).clamp(0, 100) as u8,
            score: c.score,
        })
        .collect();
    View {
        paused: status.paused,
        state,
        current,
        today: Today {
            active: duration(today.active_ms),
            idle: duration(today.idle_ms),
            categories,
        },
        policy,
        upload,
        alert,
    }
}

#[cfg(test)]
mod tests {
    use trackhrs_agent::heartbeat::{Event, SpanData};
    use trackhrs_agent::privacy::Policy;
    use trackhrs_agent::today::CategoryTime;

    use super::*;

    fn summary() -> Summary {
        Summary {
            from_ms: 0,
            to_ms: 10_000_000,
            active_ms: 4_500_000,
            idle_ms: 600_000,
            categories: vec![
                CategoryTime {
                    category: vec!["Work".into(), "Programming".into()],
                    score: 80,
                    active_ms: 3_600_000,
                },
                CategoryTime {
                    category: vec!["Uncategorized".into()],
                    score: 0,
                    active_ms: 900_000,
                },
            ],
            rules_version: Some(2),
        }
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(-5), "0 s");
        assert_eq!(duration(59_999), "59 s");
        assert_eq!(duration(60_000), "1 min");
        assert_eq!(duration(3_599_000), "59 min");
        assert_eq!(duration(3_600_000 + 5 * 60_000), "1 h 05 min");
    }

    #[test]
    fn a_tracking_agent_shows_its_span_today_and_policy() {
        let status = Status {
            current: Some(Event {
                start_ms: 1_000_000,
                duration_ms: 0,
                data: SpanData {
                    app: "code".into(),
                    title: "main.rs".into(),
                    url: None,
                    active: true,
                },
            }),
            policy: Some(Policy {
                capture_titles: true,
                capture_urls: false,
            }),
            upload: UploadState::UpToDate { at_ms: 5 },
            ..Status::default()
        };
        let v = view(&status, &summary(), 1_125_000, |ms| format!("t{ms}"));
        assert_eq!(v.state, "Tracking");
        assert!(!v.paused);
        let current = v.current.unwrap();
        assert_eq!(
            (
                current.app.as_str(),
                current.title.as_str(),
                current.duration.as_str()
            ),
            ("code", "main.rs", "2 min")
        );
        assert_eq!(v.policy, "Window titles recorded · URLs not recorded");
        assert_eq!(v.upload, "Uploaded at t5");
        assert_eq!(v.alert, None);
        assert_eq!(v.today.active, "1 h 15 min");
        assert_eq!(v.today.categories[0].name, "Work / Programming");
        assert_eq!(v.today.categories[0].percent, 80);
        assert_eq!(v.today.categories[1].percent, 20);
    }

    #[test]
    fn paused_offline_and_refused_are_said_plainly() {
        let paused = Status {
            paused: true,
            waiting: 3,
            upload: UploadState::Retrying {
                error: "connection refused".into(),
            },
            ..Status::default()
        };
        let v = view(&paused, &summary(), 0, |_| String::new());
        assert_eq!(v.state, "Paused: nothing is recorded");
        assert!(v.paused);
        assert_eq!(
            v.upload,
            "Offline · 3 spans wait on this computer (connection refused)"
        );
        assert!(v.policy.starts_with("Not known yet"));
        let refused = Status {
            waiting: 1,
            upload: UploadState::Refused {
                reason: "device revoked".into(),
            },
            ..Status::default()
        };
        let v = view(&refused, &summary(), 0, |_| String::new());
        assert_eq!(v.upload, "Uploads stopped · 1 span waits on this computer");
        assert!(v.alert.unwrap().contains("device revoked"));
    }
}
