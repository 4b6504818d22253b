//! The classifier's semantics, case by case, and its properties.

use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn cat(name: &[&str], regex: Option<&str>, ignore_case: bool, score: Option<i32>) -> CategoryRule {
    CategoryRule {
        name: name.iter().map(|s| (*s).to_owned()).collect(),
        regex: regex.map(str::to_owned),
        ignore_case,
        score,
    }
}

fn path(name: &[&str]) -> Vec<String> {
    name.iter().map(|s| (*s).to_owned()).collect()
}

fn compile(categories: &[CategoryRule]) -> Rules {
    match Rules::compile(categories) {
        Ok(rules) => rules,
        Err(e) => panic!("rules should compile: {e}"),
    }
}

fn defaults() -> Rules {
    compile(&Rules::default_rules())
}

// Given/when/then: given rules, when an activity is classified, then
// this category and score.

#[test]
fn deepest_match_wins_over_a_shallower_one_listed_first() {
    let rules = compile(&[
        cat(&["Work"], Some("GitHub"), false, Some(50)),
        cat(&["Work", "Programming"], Some("GitHub"), false, Some(90)),
    ]);
    let c = rules.classify("firefox", "trackhrs - GitHub", None);
    assert_eq!(c.category, path(&["Work", "Programming"]));
    assert_eq!(c.score, 90);
}

#[test]
fn deepest_match_wins_across_fields() {
    // The shallow rule matches the app, the deep one only the title.
    let rules = compile(&[
        cat(&["Browsing"], Some("firefox"), false, None),
        cat(
            &["Work", "Programming", "Rust"],
            Some(r"\.rs\b"),
            false,
            None,
        ),
    ]);
    let c = rules.classify("firefox", "docs.rs - serde", None);
    assert_eq!(c.category, path(&["Work", "Programming", "Rust"]));
}

#[test]
fn a_tie_goes_to_the_first_listed() {
    let rules = compile(&[
        cat(&["Comms", "IM"], Some("Slack"), false, None),
        cat(&["Work", "Chat"], Some("Slack"), false, None),
    ]);
    assert_eq!(
        rules.classify("Slack", "", None).category,
        path(&["Comms", "IM"])
    );
    let reversed = compile(&[
        cat(&["Work", "Chat"], Some("Slack"), false, None),
        cat(&["Comms", "IM"], Some("Slack"), false, None),
    ]);
    assert_eq!(
        reversed.classify("Slack", "", None).category,
        path(&["Work", "Chat"])
    );
}

#[test]
fn ignore_case_on_and_off() {
    let sensitive = compile(&[cat(&["Media", "Music"], Some("Spotify"), false, None)]);
    assert_eq!(
        sensitive.classify("spotify", "", None).category,
        path(&[UNCATEGORIZED])
    );
    assert_eq!(
        sensitive.classify("Spotify", "", None).category,
        path(&["Media", "Music"])
    );

    let insensitive = compile(&[cat(&["Media", "Music"], Some("Spotify"), true, None)]);
    assert_eq!(
        insensitive.classify("SPOTIFY", "", None).category,
        path(&["Media", "Music"])
    );
    assert_eq!(
        insensitive.classify("spotify", "", None).category,
        path(&["Media", "Music"])
    );
}

#[test]
fn ignore_case_of_one_rule_does_not_leak_into_another() {
    let rules = compile(&[
        cat(&["A"], Some("alpha"), true, None),
        cat(&["B"], Some("Beta"), false, None),
    ]);
    assert_eq!(rules.classify("ALPHA", "", None).category, path(&["A"]));
    assert_eq!(
        rules.classify("BETA", "", None).category,
        path(&[UNCATEGORIZED])
    );
}

#[test]
fn a_rule_can_match_on_the_url_only() {
    let rules = compile(&[cat(
        &["Work", "Tickets"],
        Some(r"linear\.app/"),
        false,
        Some(80),
    )]);
    let c = rules.classify(
        "firefox",
        "TRK-12 Fix login",
        Some("https://linear.app/acme/issue/TRK-12"),
    );
    assert_eq!(c.category, path(&["Work", "Tickets"]));
    assert_eq!(c.score, 80);
    let without_url = rules.classify("firefox", "TRK-12 Fix login", None);
    assert_eq!(without_url.category, path(&[UNCATEGORIZED]));
}

#[test]
fn no_match_is_uncategorized_with_score_zero() {
    let rules = compile(&[cat(&["Work"], Some("GitHub"), false, Some(100))]);
    let c = rules.classify("calculator", "Calculator", None);
    assert_eq!(
        c,
        Classification {
            category: path(&[UNCATEGORIZED]),
            score: 0
        }
    );
    let empty = compile(&[]);
    assert_eq!(
        empty.classify("GitHub", "GitHub", Some("GitHub")).category,
        path(&[UNCATEGORIZED])
    );
}

#[test]
fn a_parent_without_a_rule_matches_nothing() {
    let rules = compile(&[cat(&["Media"], None, false, Some(-50))]);
    assert_eq!(
        rules.classify("Media", "Media", Some("Media")).category,
        path(&[UNCATEGORIZED])
    );
}

#[test]
fn score_is_inherited_from_the_nearest_ancestor_with_one() {
    let rules = compile(&[
        cat(&["Work"], None, false, Some(100)),
        cat(&["Work", "Programming"], None, false, Some(90)),
        cat(&["Work", "Programming", "Rust"], Some("rust"), false, None),
        cat(&["Work", "Meetings"], Some("standup"), false, None),
        cat(
            &["Work", "Meetings", "Retro"],
            Some("retro"),
            false,
            Some(-10),
        ),
        cat(&["Other", "Deep", "Thing"], Some("thing"), false, None),
    ]);
    assert_eq!(rules.classify("", "rust", None).score, 90);
    assert_eq!(rules.classify("", "standup", None).score, 100);
    assert_eq!(rules.classify("", "retro", None).score, -10);
    // No ancestor defines a score: 0.
    assert_eq!(rules.classify("", "thing", None).score, 0);
}

#[test]
fn the_score_of_a_duplicate_path_counts_as_the_categorys_own() {
    let rules = compile(&[
        cat(&["Work"], None, false, Some(100)),
        cat(&["Work", "Docs"], Some("Docs"), false, None),
        cat(&["Work", "Docs"], None, false, Some(40)),
    ]);
    assert_eq!(rules.classify("", "Google Docs", None).score, 40);
}

#[test]
fn the_default_rules_compile_and_are_valid() {
    let rules = defaults();
    assert_eq!(rules.categories().len(), Rules::default_rules().len());
    assert!(Rules::default_rules().iter().all(|c| c.name.len() <= 2));
}

/// app, title, url, expected category, expected score.
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [&'static str],
    i32,
);

#[test]
fn the_default_rules_classify_realistic_activity() {
    let rules = defaults();
    let cases: &[Case] = &[
        (
            "code",
            "main.rs - trackhrs",
            None,
            &["Work", "Programming"],
            100,
        ),
        (
            "Code.exe",
            "lib.rs - trackhrs - Visual Studio Code",
            None,
            &["Work", "Programming"],
            100,
        ),
        (
            "jetbrains-idea",
            "trackhrs – Main.java",
            None,
            &["Work", "Programming"],
            100,
        ),
        (
            "Alacritty",
            "cargo test",
            None,
            &["Work", "Programming"],
            100,
        ),
        (
            "firefox",
            "rust - How do I borrow? - Stack Overflow",
            Some("https://stackoverflow.com/questions/1"),
            &["Work", "Programming"],
            100,
        ),
        (
            "firefox",
            "Pull requests · acme/trackhrs · GitHub",
            None,
            &["Work", "Programming"],
            100,
        ),
        (
            "soffice.bin",
            "budget.ods - LibreOffice Calc",
            None,
            &["Work"],
            100,
        ),
        (
            "gimp-2.10",
            "[logo] (imported)-1.0 (RGB color 8-bit gamma integer) – GIMP",
            None,
            &["Work", "Image"],
            100,
        ),
        (
            "Slack",
            "#general - Acme - Slack",
            None,
            &["Comms", "IM"],
            25,
        ),
        ("signal-desktop", "Signal", None, &["Comms", "IM"], 25),
        (
            "thunderbird",
            "Inbox - Mozilla Thunderbird",
            None,
            &["Comms", "Email"],
            25,
        ),
        (
            "chrome",
            "Inbox (3) - me@example.com - Gmail",
            Some("https://mail.google.com/mail/u/0/"),
            &["Comms", "Email"],
            25,
        ),
        ("zoom.us", "Zoom Meeting", None, &["Comms", "Video"], 25),
        (
            "firefox",
            "Weekly sync",
            Some("https://meet.google.com/abc-defg-hij"),
            &["Comms", "Video"],
            25,
        ),
        ("firefox", "YouTube - cats", None, &["Media", "Video"], -50),
        (
            "vlc",
            "holiday.mkv - VLC media player",
            None,
            &["Media", "Video"],
            -50,
        ),
        (
            "firefox",
            "Home / X",
            Some("https://x.com/home"),
            &["Media", "Social Media"],
            -50,
        ),
        (
            "firefox",
            "r/rust - reddit",
            None,
            &["Media", "Social Media"],
            -50,
        ),
        ("Spotify", "Spotify Premium", None, &["Media", "Music"], -25),
        (
            "firefox",
            "YouTube Music",
            Some("https://music.youtube.com/"),
            &["Media", "Music"],
            -25,
        ),
        ("steam", "Steam", None, &["Media", "Games"], -100),
        ("gnome-calculator", "Calculator", None, &[UNCATEGORIZED], 0),
        // Common words in a title do not trip the anchored app names.
        (
            "firefox",
            "Enter the code you received",
            None,
            &[UNCATEGORIZED],
            0,
        ),
        (
            "firefox",
            "How to zoom in on a photo",
            None,
            &[UNCATEGORIZED],
            0,
        ),
    ];
    for (app, title, url, expected, score) in cases {
        let c = rules.classify(app, title, *url);
        assert_eq!(
            c.category,
            path(expected),
            "app {app:?}, title {title:?}, url {url:?}"
        );
        assert_eq!(c.score, *score, "app {app:?}, title {title:?}, url {url:?}");
    }
}

/// Modelled on what aw-webui's "Export categories" writes for its default
/// categories, with a score added to some, `"type": "none"` parents, the
/// `"type": null` Uncategorized entry and the fields we ignore.
const AW_EXPORT: &str = r##"{
  "categories": [
    {"id": 0, "name": ["Work"], "name_pretty": "Work", "subname": "Work", "depth": 0, "parent": null,
     "rule": {"type": "regex", "regex": "Google Docs|libreoffice|ReText", "ignore_case": true},
     "data": {"color": "#0F0", "score": 10}},
    {"id": 1, "name": ["Work", "Programming"], "name_pretty": "Work > Programming", "subname": "Programming", "depth": 1, "parent": ["Work"],
     "rule": {"type": "regex", "regex": "GitHub|Stack Overflow|BitBucket|Gitlab|vim|Spyder|kate|Ghidra|Scite"},
     "data": {"color": "#00F"}},
    {"id": 2, "name": ["Work", "Programming", "ActivityWatch"], "depth": 2,
     "rule": {"type": "regex", "regex": "ActivityWatch|aw-", "ignore_case": true}},
    {"id": 3, "name": ["Work", "Image"], "depth": 1, "rule": {"type": "regex", "regex": "Gimp|Inkscape"}},
    {"id": 4, "name": ["Work", "Video"], "depth": 1, "rule": {"type": "regex", "regex": "Kdenlive"}},
    {"id": 5, "name": ["Work", "Audio"], "depth": 1, "rule": {"type": "regex", "regex": "Audacity"}},
    {"id": 6, "name": ["Work", "3D"], "depth": 1, "rule": {"type": "regex", "regex": "Blender"}},
    {"id": 7, "name": ["Media"], "depth": 0, "rule": {"type": "none"}, "data": {"color": "#F00", "score": -50}},
    {"id": 8, "name": ["Media", "Games"], "depth": 1, "rule": {"type": "regex", "regex": "Minecraft|RimWorld"}, "data": {"color": "#0FF"}},
    {"id": 9, "name": ["Media", "Video"], "depth": 1, "rule": {"type": "regex", "regex": "YouTube|Plex|VLC"}, "data": {"color": "#F33"}},
    {"id": 10, "name": ["Media", "Social Media"], "depth": 1,
     "rule": {"type": "regex", "regex": "reddit|Facebook|Twitter|Instagram|devRant", "ignore_case": true}, "data": {"color": "#FCF"}},
    {"id": 11, "name": ["Media", "Music"], "depth": 1,
     "rule": {"type": "regex", "regex": "Spotify|Deezer", "ignore_case": true}, "data": {"color": "#A8FC83", "score": -20.0}},
    {"id": 12, "name": ["Comms"], "depth": 0, "rule": {"type": "none"}, "data": {"color": "#5FA", "score": 5}},
    {"id": 13, "name": ["Comms", "IM"], "depth": 1,
     "rule": {"type": "regex", "regex": "Messenger|Telegram|Signal|WhatsApp|Rambox|Slack|Riot|Element|Discord|Nheko|NeoChat|Mattermost"}},
    {"id": 14, "name": ["Comms", "Email"], "depth": 1, "rule": {"type": "regex", "regex": "Gmail|Thunderbird|mutt|alpine"}},
    {"id": 15, "name": ["Uncategorized"], "depth": 0, "rule": {"type": null}, "data": {"color": "#CCC"}}
  ]
}"##;

#[test]
fn parses_a_realistic_activitywatch_export() {
    let categories = match parse_activitywatch(AW_EXPORT) {
        Ok(categories) => categories,
        Err(e) => panic!("export should parse: {e}"),
    };
    assert_eq!(categories.len(), 16);
    assert_eq!(
        categories[0],
        cat(
            &["Work"],
            Some("Google Docs|libreoffice|ReText"),
            true,
            Some(10)
        )
    );
    assert_eq!(
        categories[2],
        cat(
            &["Work", "Programming", "ActivityWatch"],
            Some("ActivityWatch|aw-"),
            true,
            None
        )
    );
    assert_eq!(categories[7], cat(&["Media"], None, false, Some(-50)));
    assert_eq!(categories[11].score, Some(-20));
    assert_eq!(categories[15], cat(&["Uncategorized"], None, false, None));

    let rules = compile(&categories);
    let c = rules.classify("aw-qt", "ActivityWatch", None);
    assert_eq!(c.category, path(&["Work", "Programming", "ActivityWatch"]));
    assert_eq!(c.score, 10);
    let c = rules.classify("firefox", "YouTube - cats", None);
    assert_eq!((c.category, c.score), (path(&["Media", "Video"]), -50));
    let c = rules.classify("Slack", "general", None);
    assert_eq!((c.category, c.score), (path(&["Comms", "IM"]), 5));
}

#[test]
fn parses_a_bare_array_and_reads_an_empty_regex_as_no_rule() {
    let json = r#"[
        {"name": ["Work"], "rule": {"type": "regex", "regex": ""}, "data": {"score": 70}},
        {"name": ["Work", "Docs"], "rule": {"type": "regex", "regex": "Docs"}, "extra": [1, 2]},
        {"name": ["Parent"]}
    ]"#;
    let categories = match parse_activitywatch(json) {
        Ok(categories) => categories,
        Err(e) => panic!("array should parse: {e}"),
    };
    assert_eq!(
        categories,
        vec![
            cat(&["Work"], None, false, Some(70)),
            cat(&["Work", "Docs"], Some("Docs"), false, None),
            cat(&["Parent"], None, false, None),
        ]
    );
}

#[test]
fn export_then_import_is_the_identity() {
    let mut categories = Rules::default_rules();
    categories.push(cat(
        &["Work", "Tickets"],
        Some(r#"linear\.app/"quoted"#),
        false,
        Some(-7),
    ));
    let json = to_activitywatch(&categories);
    match parse_activitywatch(&json) {
        Ok(back) => assert_eq!(back, categories),
        Err(e) => panic!("our own export should parse: {e}\n{json}"),
    }
    // And an imported export, written again, reads back the same.
    let imported = parse_activitywatch(AW_EXPORT).unwrap_or_default();
    assert_eq!(
        parse_activitywatch(&to_activitywatch(&imported)).ok(),
        Some(imported)
    );
}

#[test]
fn export_has_activitywatchs_shape() {
    let json = to_activitywatch(&[
        cat(&["Media"], None, false, Some(-50)),
        cat(&["Media", "Video"], Some("YouTube"), true, None),
    ]);
    let value: Value = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(
        value,
        json!({"categories": [
            {"id": 0, "name": ["Media"], "rule": {"type": "none"}, "data": {"score": -50}, "depth": 0},
            {"id": 1, "name": ["Media", "Video"],
             "rule": {"type": "regex", "regex": "YouTube", "ignore_case": true}, "data": {}, "depth": 1},
        ]})
    );
}

/// Asserts that `result` is an error whose message contains every one
/// of `needles`.
fn assert_rejected<T: std::fmt::Debug>(result: Result<T, RulesError>, needles: &[&str]) {
    match result {
        Ok(value) => panic!("expected a rejection, got {value:?}"),
        Err(e) => {
            let message = e.to_string();
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{message:?} should mention {needle:?}"
                );
            }
        }
    }
}

#[test]
fn compile_rejections_name_the_category() {
    let ok = cat(&["Work"], Some("GitHub"), false, None);
    let with = |bad: CategoryRule| vec![ok.clone(), bad];

    assert_rejected(
        Rules::compile(&with(cat(
            &["Work", "Broken"],
            Some("(unclosed"),
            false,
            None,
        ))),
        &["categories[1]", "Work > Broken", "invalid regex"],
    );
    assert_rejected(
        Rules::compile(&with(cat(&[], Some("x"), false, None))),
        &["categories[1]", "no name"],
    );
    assert_rejected(
        Rules::compile(&with(cat(&["Work", ""], Some("x"), false, None))),
        &[
            "categories[1]",
            "Work > \"\"",
            "part 1 of the name is empty",
        ],
    );
    assert_rejected(
        Rules::compile(&with(cat(&["  ", "X"], Some("x"), false, None))),
        &["categories[1]", "part 0"],
    );
    assert_rejected(
        Rules::compile(&with(cat(
            &["Work", "Long"],
            Some(&"a".repeat(MAX_REGEX_LEN + 1)),
            false,
            None,
        ))),
        &["categories[1]", "Work > Long", "4097 bytes", "4096"],
    );
    assert_rejected(
        Rules::compile(&with(cat(&["Work", "Empty"], Some(""), false, None))),
        &["categories[1]", "Work > Empty", "empty"],
    );
    assert_rejected(
        Rules::compile(&with(cat(
            &["Work", "Too good"],
            Some("x"),
            false,
            Some(101),
        ))),
        &["categories[1]", "Work > Too good", "101", "-100..=100"],
    );
    assert_rejected(
        Rules::compile(&with(cat(&["Work", "Too bad"], None, false, Some(-101)))),
        &["categories[1]", "Work > Too bad", "-101"],
    );
    // Short to write, huge to compile: refused by the size limit.
    assert_rejected(
        Rules::compile(&with(cat(
            &["Work", "Explosive"],
            Some(r"\w{1000}{1000}"),
            false,
            None,
        ))),
        &["categories[1]", "Work > Explosive", "invalid regex"],
    );
    // Look-around is not in the regex crate's syntax.
    assert_rejected(
        Rules::compile(&with(cat(
            &["Work", "Lookahead"],
            Some("foo(?=bar)"),
            false,
            None,
        ))),
        &["categories[1]", "Work > Lookahead"],
    );
    let many = vec![ok; MAX_CATEGORIES + 1];
    assert_rejected(Rules::compile(&many), &["1001", "1000"]);
    assert!(Rules::compile(&many[..MAX_CATEGORIES]).is_ok());
}

#[test]
fn import_rejections_name_the_category() {
    let import = |bad: &str| {
        parse_activitywatch(&format!(
            r#"{{"categories": [{{"name": ["Work"], "rule": {{"type": "regex", "regex": "GitHub"}}}}, {bad}]}}"#
        ))
    };
    assert_rejected(
        import(r#"{"name": ["Work", "Broken"], "rule": {"type": "regex", "regex": "a)"}}"#),
        &["categories[1]", "Work > Broken", "invalid regex"],
    );
    assert_rejected(
        import(r#"{"name": [], "rule": {"type": "none"}}"#),
        &["categories[1]", "no name"],
    );
    assert_rejected(
        import(r#"{"rule": {"type": "none"}}"#),
        &["categories[1]", "missing"],
    );
    assert_rejected(
        import(r#"{"name": ["Work", ""]}"#),
        &["categories[1]", "Work > \"\"", "empty"],
    );
    assert_rejected(
        import(r#"{"name": "Work"}"#),
        &["categories[1]", "Work", "list of strings"],
    );
    assert_rejected(
        import(r#"{"name": ["Work", 3]}"#),
        &["categories[1]", "list of strings"],
    );
    assert_rejected(
        import(&format!(
            r#"{{"name": ["Work", "Long"], "rule": {{"type": "regex", "regex": "{}"}}}}"#,
            "a".repeat(5000)
        )),
        &["categories[1]", "Work > Long", "5000 bytes"],
    );
    assert_rejected(
        import(r#"{"name": ["Media"], "rule": {"type": "none"}, "data": {"score": 1000}}"#),
        &["categories[1]", "Media", "1000", "-100..=100"],
    );
    assert_rejected(
        import(r#"{"name": ["Media"], "data": {"score": 1e300}}"#),
        &["categories[1]", "Media", "score 1e", "-100..=100"],
    );
    assert_rejected(
        import(r#"{"name": ["Media"], "data": {"score": 18446744073709551615}}"#),
        &[
            "categories[1]",
            "Media",
            "18446744073709551615",
            "-100..=100",
        ],
    );
    assert_rejected(
        import(r#"{"name": ["Media"], "data": {"score": 2.5}}"#),
        &["categories[1]", "Media", "2.5", "whole number"],
    );
    assert_rejected(
        import(r#"{"name": ["Media"], "data": {"score": "high"}}"#),
        &["categories[1]", "Media", "not a number"],
    );
    assert_rejected(
        import(r#"{"name": ["Media"], "rule": {"type": "glob", "regex": "*"}}"#),
        &["categories[1]", "Media", "unknown rule type \"glob\""],
    );
    assert_rejected(
        import(
            r#"{"name": ["Media"], "rule": {"type": "regex", "regex": "x", "ignore_case": "yes"}}"#,
        ),
        &["categories[1]", "Media", "ignore_case"],
    );
    assert_rejected(import("42"), &["categories[1]", "object"]);

    let many = format!(
        "[{}]",
        vec![r#"{"name": ["A"]}"#; MAX_CATEGORIES + 1].join(",")
    );
    assert_rejected(parse_activitywatch(&many), &["too many categories", "1001"]);

    assert_rejected(
        parse_activitywatch("not json"),
        &["not an ActivityWatch category export"],
    );
    assert_rejected(
        parse_activitywatch(r#"{"classes": []}"#),
        &["\"categories\""],
    );
    assert_rejected(parse_activitywatch(r#""Work""#), &["list of categories"]);
}

/// The obvious implementation, one regex at a time in list order, to
/// check the regex-set one against.
fn classify_naively(
    categories: &[CategoryRule],
    app: &str,
    title: &str,
    url: Option<&str>,
) -> Vec<String> {
    let mut best: Option<&CategoryRule> = None;
    for category in categories {
        let Some(regex) = &category.regex else {
            continue;
        };
        let Ok(regex) = RegexBuilder::new(regex)
            .case_insensitive(category.ignore_case)
            .build()
        else {
            continue;
        };
        let matched = [Some(app), Some(title), url]
            .into_iter()
            .flatten()
            .any(|s| regex.is_match(s));
        if matched && best.is_none_or(|b| category.name.len() > b.name.len()) {
            best = Some(category);
        }
    }
    best.map_or_else(|| vec![UNCATEGORIZED.to_owned()], |c| c.name.clone())
}

fn arb_category() -> impl Strategy<Value = CategoryRule> {
    (
        prop::collection::vec(
            prop::sample::select(vec!["Work", "Media", "Comms", "Code", "Video"]),
            1..4,
        ),
        prop::option::of(prop::sample::select(vec![
            "a", "ab", "^a", "b$", "[a-c]+", "(?:x|yz)", "A", r"\d", "é", ".",
        ])),
        any::<bool>(),
        prop::option::of(MIN_SCORE..=MAX_SCORE),
    )
        .prop_map(|(name, regex, ignore_case, score)| CategoryRule {
            name: name.into_iter().map(str::to_owned).collect(),
            regex: regex.map(str::to_owned),
            ignore_case,
            score,
        })
}

proptest! {
    #[test]
    fn classify_returns_uncategorized_or_a_defined_category(
        categories in prop::collection::vec(arb_category(), 0..12),
        app in "[a-zA-Z0-9é ]{0,8}",
        title in "\\PC{0,16}",
        url in prop::option::of("[a-z:/.]{0,12}"),
    ) {
        let rules = compile(&categories);
        let c = rules.classify(&app, &title, url.as_deref());
        let defined = categories.iter().any(|cat| cat.name == c.category);
        prop_assert!(defined || c.category == [UNCATEGORIZED]);
        prop_assert!((MIN_SCORE..=MAX_SCORE).contains(&c.score));
        if c.category == [UNCATEGORIZED] && !defined {
            prop_assert_eq!(c.score, 0);
        }
        // Deterministic, and the same as the one-regex-at-a-time reading.
        prop_assert_eq!(&rules.classify(&app, &title, url.as_deref()), &c);
        prop_assert_eq!(classify_naively(&categories, &app, &title, url.as_deref()), c.category);
    }

    #[test]
    fn compiling_and_importing_arbitrary_input_never_panics(
        regex in "\\PC{0,24}",
        ignore_case in any::<bool>(),
        json in "\\PC{0,64}",
        input in "\\PC{0,32}",
    ) {
        let categories = [CategoryRule { name: vec!["X".to_owned()], regex: Some(regex), ignore_case, score: None }];
        if let Ok(rules) = Rules::compile(&categories) {
            let c = rules.classify(&input, &input, Some(&input));
            prop_assert!(c.category == ["X"] || c.category == [UNCATEGORIZED]);
        }
        let _ = parse_activitywatch(&json);
    }
}
