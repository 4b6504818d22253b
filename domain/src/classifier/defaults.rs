//! The category tree an org classifies with until it sets its own.

use super::{CategoryRule, Rules};

impl Rules {
    /// The category tree used when an org has defined none, modelled on
    /// ActivityWatch's defaults: Work (+100) with Programming, Image, Video
    /// and Audio; Comms (+25) with IM, Email and Video; Media (-50) with
    /// Games (-100), Music (-25), Video and Social Media.
    ///
    /// The patterns search the app, the title and the url alike, so short
    /// or common words (`code`, `zoom`, `signal`) are anchored to match only
    /// a whole app name; longer names and web addresses match anywhere.
    pub fn default_rules() -> Vec<CategoryRule> {
        fn parent(name: &[&str], score: Option<i32>) -> CategoryRule {
            CategoryRule {
                name: name.iter().map(|s| (*s).to_owned()).collect(),
                regex: None,
                ignore_case: false,
                score,
            }
        }
        fn rule(name: &[&str], regex: &str, score: Option<i32>) -> CategoryRule {
            CategoryRule {
                name: name.iter().map(|s| (*s).to_owned()).collect(),
                regex: Some(regex.to_owned()),
                ignore_case: true,
                score,
            }
        }
        vec![
            rule(
                &["Work"],
                r"Google (?:Docs|Sheets|Slides)|docs\.google\.com|LibreOffice|^soffice(?:\.bin)?$|Microsoft (?:Word|Excel|PowerPoint)|^(?:WINWORD|EXCEL|POWERPNT)(?:\.EXE)?$|Confluence|Jira|Notion|Obsidian|ReText",
                Some(100),
            ),
            rule(
                &["Work", "Programming"],
                concat!(
                    // Apps whose names are common words: whole app name only.
                    r"^(?:code|code-oss|codium|vscodium|cursor|vim|nvim|gvim|emacs|idea|idea64|pycharm|pycharm64|clion|clion64|goland|goland64|rustrover|rustrover64|webstorm|webstorm64|rider|rider64|studio|studio64|xcode|sublime_text|zed|kate|helix|hx",
                    r"|terminal|iterm2|alacritty|kitty|wezterm|wezterm-gui|ghostty|foot|konsole|gnome-terminal|gnome-terminal-server|xterm|urxvt|windowsterminal|powershell|pwsh|cmd)(?:\.exe|\.app)?$",
                    // Distinctive names and sites: anywhere.
                    r"|Visual Studio|IntelliJ IDEA|PyCharm|CLion|GoLand|RustRover|WebStorm|JetBrains|Android Studio|Sublime Text",
                    r"|GitHub|GitLab|Bitbucket|Stack Overflow|stackoverflow\.com|docs\.rs|crates\.io",
                ),
                None,
            ),
            rule(
                &["Work", "Image"],
                r"GIMP|Inkscape|Krita|Figma|Photoshop|Illustrator|Affinity (?:Photo|Designer)|darktable",
                None,
            ),
            rule(
                &["Work", "Video"],
                r"Kdenlive|DaVinci Resolve|^resolve(?:\.exe)?$|Premiere Pro|Final Cut|Shotcut|OpenShot|OBS Studio|^obs(?:64)?(?:\.exe)?$",
                None,
            ),
            rule(
                &["Work", "Audio"],
                r"Audacity|Ardour|^reaper(?:\.exe)?$|Ableton|FL Studio|Logic Pro|GarageBand|Bitwig",
                None,
            ),
            parent(&["Comms"], Some(25)),
            rule(
                &["Comms", "IM"],
                r"Slack|Discord|Microsoft Teams|^(?:ms-)?teams(?:\.exe)?$|Telegram|^signal(?:-desktop)?(?:\.exe)?$|Signal Desktop|WhatsApp|^element(?:\.exe)?$|Mattermost|Zulip|Rocket\.Chat",
                None,
            ),
            rule(
                &["Comms", "Email"],
                r"Thunderbird|Gmail|mail\.google\.com|Outlook|outlook\.(?:office|office365|live)\.com|^mail(?:\.app)?$|^evolution$|Geary|Proton ?Mail|Fastmail|^(?:neo)?mutt$|^aerc$",
                None,
            ),
            rule(
                &["Comms", "Video"],
                r"^zoom(?:\.us)?(?:\.exe)?$|Zoom Meeting|Zoom Workplace|zoom\.us/|Google Meet|meet\.google\.com|Jitsi|meet\.jit\.si|Webex|Skype|FaceTime|Whereby",
                None,
            ),
            parent(&["Media"], Some(-50)),
            rule(
                &["Media", "Games"],
                r"^steam(?:webhelper)?(?:\.exe)?$|Steam Big Picture|Minecraft|RimWorld|Factorio|Lutris|Heroic Games|Epic Games|Battle\.net|League of Legends|Dota 2|Counter-Strike|chess\.com|lichess",
                Some(-100),
            ),
            // Before Video, so that YouTube Music (equally deep) is music.
            rule(
                &["Media", "Music"],
                r"Spotify|Deezer|TIDAL|Apple Music|YouTube Music|music\.youtube\.com|SoundCloud|Rhythmbox|Amarok|foobar2000",
                Some(-25),
            ),
            rule(
                &["Media", "Video"],
                r"YouTube|youtu\.be|Netflix|Twitch|Prime Video|Disney\+|Hulu|Plex|Vimeo|^vlc(?:\.exe)?$|VLC media player|^mpv(?:\.exe)?$",
                None,
            ),
            rule(
                &["Media", "Social Media"],
                r"reddit|Twitter|//(?:www\.)?x\.com\b| / X$|Facebook|Instagram|LinkedIn|TikTok|Mastodon|Bluesky|bsky\.app",
                None,
            ),
        ]
    }
}
