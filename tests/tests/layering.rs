//! Layering check: the dependency arrows of design.md hold in Cargo's resolved graph.
//!
//! The test runs `cargo metadata` for the host platform and walks
//! `resolve.nodes`, following normal and build dependencies only:
//! dev-dependencies never reach a crate's users, so they cannot break the
//! layering. The graph is the one Cargo resolved for the whole workspace, with
//! features unified across members, so it over-approximates what one crate
//! alone would pull in. A failure can therefore come from a feature another
//! member switches on; the printed path shows where.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The pure domain crate.
const DOMAIN: &str = "trackhrs-domain";
/// The wire-types crate.
const SCHEMAS: &str = "trackhrs-schemas";
/// The gRPC gateway, which only the platform assembly imports.
const GATEWAY: &str = "trackhrs-gateway";
/// The platform assembly, imported by the binary and the test-kit.
const PLATFORM: &str = "trackhrs-platform";
/// The tests' fixtures, only ever a dev-dependency.
const TESTKIT: &str = "trackhrs-testkit";
/// The `trackhrs` binary (package `cli/`).
const BINARY: &str = "trackhrs";

/// Crates that mean I/O or an async runtime; none may be below the domain.
const NOT_IN_DOMAIN: &[&str] = &[
    "tokio",
    "async-nats",
    "tonic",
    "tokio-postgres",
    "sqlx",
    "mio",
    // Not named by design.md, but they would break the same rule.
    "async-std",
    "smol",
    "postgres",
    "rusqlite",
    "hyper",
    "reqwest",
    "nats",
];

/// The resolved dependency graph, by package id.
struct Graph {
    /// Package name of every package id.
    names: BTreeMap<String, String>,
    /// How a package is shown in a path: its name for workspace members,
    /// `name@version` for everything else.
    labels: BTreeMap<String, String>,
    /// Package id of every workspace member, by package name.
    members: BTreeMap<String, String>,
    /// Package id to the ids of its normal and build dependencies.
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// The graph of this workspace, read once per test binary.
    fn get() -> &'static Self {
        static GRAPH: OnceLock<Graph> = OnceLock::new();
        GRAPH.get_or_init(|| Self::from_metadata(&cargo_metadata()))
    }

    fn from_metadata(meta: &Value) -> Self {
        let member_ids: BTreeSet<&str> = meta["workspace_members"]
            .as_array()
            .expect("cargo metadata lists workspace_members")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut names = BTreeMap::new();
        let mut labels = BTreeMap::new();
        let mut members = BTreeMap::new();
        for package in meta["packages"]
            .as_array()
            .expect("cargo metadata lists packages")
        {
            let id = package["id"].as_str().expect("every package has an id");
            let name = package["name"].as_str().expect("every package has a name");
            if member_ids.contains(id) {
                members.insert(name.to_owned(), id.to_owned());
                labels.insert(id.to_owned(), name.to_owned());
            } else {
                let version = package["version"].as_str().unwrap_or("?");
                labels.insert(id.to_owned(), format!("{name}@{version}"));
            }
            names.insert(id.to_owned(), name.to_owned());
        }
        let mut edges = BTreeMap::new();
        for node in meta["resolve"]["nodes"]
            .as_array()
            .expect("cargo metadata (without --no-deps) has resolve.nodes")
        {
            let id = node["id"].as_str().expect("every node has an id");
            let deps = node["deps"]
                .as_array()
                .expect("every node lists its deps")
                .iter()
                .filter(|dep| is_normal_or_build(dep))
                .filter_map(|dep| dep["pkg"].as_str())
                .map(str::to_owned)
                .collect();
            edges.insert(id.to_owned(), deps);
        }
        Self {
            names,
            labels,
            members,
            edges,
        }
    }

    /// The package id of workspace member `name`.
    fn member(&self, name: &str) -> &str {
        self.members
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not a workspace member"))
    }

    /// True when `id` is one of the workspace's own packages.
    fn is_member(&self, id: &str) -> bool {
        self.members.values().any(|m| m == id)
    }

    /// The package name of `id`.
    fn name<'a>(&'a self, id: &'a str) -> &'a str {
        self.names.get(id).map_or(id, String::as_str)
    }

    /// Every package reachable from `from` over normal and build
    /// dependencies, each with one shortest path to it (starting at `from`).
    fn reachable(&self, from: &str) -> BTreeMap<String, Vec<String>> {
        let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut queue = VecDeque::from([vec![from.to_owned()]]);
        while let Some(path) = queue.pop_front() {
            let last = path.last().expect("a path is never empty");
            for dep in self.edges.get(last).into_iter().flatten() {
                if dep == from || paths.contains_key(dep) {
                    continue;
                }
                let mut longer = path.clone();
                longer.push(dep.clone());
                paths.insert(dep.clone(), longer.clone());
                queue.push_back(longer);
            }
        }
        paths
    }

    /// A path as `a -> b -> c`.
    fn show(&self, path: &[String]) -> String {
        path.iter()
            .map(|id| self.labels.get(id).map_or(id.as_str(), String::as_str))
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    /// Paths from workspace member `name` to every other workspace member it depends on.
    fn workspace_paths_from(&self, name: &str) -> Vec<String> {
        self.reachable(self.member(name))
            .iter()
            .filter(|(id, _)| self.is_member(id))
            .map(|(_, path)| self.show(path))
            .collect()
    }
}

/// True for a dependency edge that is normal (`kind: null`) or build, on any target.
fn is_normal_or_build(dep: &Value) -> bool {
    dep["dep_kinds"].as_array().is_some_and(|kinds| {
        kinds
            .iter()
            .any(|k| k["kind"].is_null() || k["kind"].as_str() == Some("build"))
    })
}

/// The workspace root: the parent of this package's folder.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf()
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
}

/// `cargo metadata --format-version 1` of the workspace, parsed.
fn cargo_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace_root())
        .args(["metadata", "--format-version", "1"]);
    // Only the host's dependencies. Without the filter Cargo wants the sources
    // of every platform's crates (Windows-only ones included), which a Linux
    // build never downloaded, so the check would need the network.
    if let Some(triple) = host_triple() {
        command.arg("--filter-platform").arg(triple);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("could not run `{cargo} metadata`: {e}"));
    assert!(
        out.status.success(),
        "`{cargo} metadata` failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn the_domain_depends_on_no_runtime_database_or_network_client() {
    let graph = Graph::get();
    let offending: Vec<String> = graph
        .reachable(graph.member(DOMAIN))
        .iter()
        .filter(|(id, _)| NOT_IN_DOMAIN.contains(&graph.name(id)))
        .map(|(_, path)| graph.show(path))
        .collect();
    assert!(
        offending.is_empty(),
        "{DOMAIN} must do no I/O and depend on no async runtime, but it pulls in:\n  {}",
        offending.join("\n  ")
    );
}

/// The members that depend on `target` through normal or build edges, with
/// the path, other than `allowed` (and `target` itself).
fn importers_of(target: &str, allowed: &[&str]) -> Vec<String> {
    let graph = Graph::get();
    let id = graph.member(target);
    graph
        .members
        .iter()
        .filter(|(name, _)| name.as_str() != target && !allowed.contains(&name.as_str()))
        .filter_map(|(_, member)| graph.reachable(member).remove(id))
        .map(|path| graph.show(&path))
        .collect()
}

#[test]
fn only_the_platform_assembly_imports_the_gateway() {
    // The binary reaches the gateway through the platform.
    let offending = importers_of(GATEWAY, &[PLATFORM, BINARY, TESTKIT]);
    assert!(
        offending.is_empty(),
        "nothing may import {GATEWAY} but {PLATFORM} (and so the `{BINARY}` binary; \
         end-to-end tests reach it through [dev-dependencies]), but:\n  {}",
        offending.join("\n  ")
    );
    let direct: Vec<String> = Graph::get()
        .members
        .keys()
        .filter(|name| name.as_str() != PLATFORM && name.as_str() != GATEWAY)
        .filter(|name| direct_dependencies(name).iter().any(|d| d == GATEWAY))
        .cloned()
        .collect();
    assert!(
        direct.is_empty(),
        "only {PLATFORM} assembles the gateway, but these depend on it directly: {direct:?}"
    );
}

#[test]
fn only_the_binary_and_the_test_kit_import_the_platform_assembly() {
    let offending = importers_of(PLATFORM, &[BINARY, TESTKIT]);
    assert!(
        offending.is_empty(),
        "{PLATFORM} is assembled by the `{BINARY}` binary and the tests only, but:\n  {}",
        offending.join("\n  ")
    );
}

#[test]
fn the_test_kit_is_only_ever_a_dev_dependency() {
    let offending = importers_of(TESTKIT, &[]);
    assert!(
        offending.is_empty(),
        "{TESTKIT} is for tests ([dev-dependencies]), but:\n  {}",
        offending.join("\n  ")
    );
}

#[test]
fn the_domain_depends_on_no_other_workspace_crate() {
    let offending = Graph::get().workspace_paths_from(DOMAIN);
    assert!(
        offending.is_empty(),
        "{DOMAIN} sits at the bottom of the workspace, but it depends on:\n  {}",
        offending.join("\n  ")
    );
}

#[test]
fn the_schemas_depend_on_no_other_workspace_crate() {
    let offending = Graph::get().workspace_paths_from(SCHEMAS);
    assert!(
        offending.is_empty(),
        "{SCHEMAS} holds only wire types generated from .proto files, but it depends on:\n  {}",
        offending.join("\n  ")
    );
}

#[test]
fn the_key_encryption_keys_depend_on_no_other_workspace_crate() {
    let offending = Graph::get().workspace_paths_from("trackhrs-kek");
    assert!(
        offending.is_empty(),
        "trackhrs-kek wraps keys for the store and the credentials alike, but it depends on:\n  {}",
        offending.join("\n  ")
    );
}

/// Guards against a check that passes because it sees nothing: known edges
/// must be in the graph, and a dev-dependency must not be.
#[test]
fn the_graph_has_the_edges_it_should_and_no_dev_edges() {
    let graph = Graph::get();
    let binary = graph.reachable(graph.member(BINARY));
    assert!(
        binary.contains_key(graph.member(GATEWAY)),
        "the graph lost the edge {BINARY} -> {GATEWAY}"
    );
    let domain = graph.reachable(graph.member(DOMAIN));
    assert!(
        domain.keys().any(|id| graph.name(id) == "serde"),
        "the graph lost the edge {DOMAIN} -> serde"
    );
    // proptest is only a dev-dependency of the domain.
    let dev_edge: Vec<String> = domain
        .iter()
        .filter(|(id, _)| graph.name(id) == "proptest")
        .map(|(_, path)| graph.show(path))
        .collect();
    assert!(
        dev_edge.is_empty(),
        "dev-dependencies must not count: {}",
        dev_edge.join(", ")
    );
}

#[test]
fn the_agent_reaches_the_platform_only_through_the_schemas() {
    // The pure domain is shared (its classifier gives the employee the
    // dashboards' categories); every server-side crate is out of reach.
    let offending: Vec<String> = Graph::get()
        .workspace_paths_from("trackhrs-agent")
        .into_iter()
        .filter(|path| {
            !path.ends_with("-> trackhrs-schemas") && !path.ends_with("-> trackhrs-domain")
        })
        .collect();
    assert!(
        offending.is_empty(),
        "the agent may use only the wire types of trackhrs-schemas and the pure domain, but it depends on:\n  {}",
        offending.join("\n  ")
    );
}

/// The direct normal and build dependencies of workspace member `name`.
fn direct_dependencies(name: &str) -> Vec<String> {
    let graph = Graph::get();
    graph
        .edges
        .get(graph.member(name))
        .into_iter()
        .flatten()
        .map(|id| graph.name(id).to_owned())
        .collect()
}

#[test]
fn the_gateway_reaches_stores_only_through_the_application_layer() {
    let forbidden = [
        "trackhrs-nats",
        "trackhrs-commands",
        "trackhrs-projections",
        "trackhrs-credentials",
        "async-nats",
        "tokio-postgres",
        "postgres",
        "deadpool-postgres",
    ];
    let direct = direct_dependencies(GATEWAY);
    assert!(
        direct.iter().any(|d| d == "trackhrs-app"),
        "the graph lost the edge {GATEWAY} -> trackhrs-app"
    );
    let offending: Vec<&String> = direct
        .iter()
        .filter(|d| forbidden.contains(&d.as_str()))
        .collect();
    assert!(
        offending.is_empty(),
        "{GATEWAY} holds adapters only and reaches the event store, PostgreSQL and the \
         credential store through trackhrs-app, but it depends directly on: {offending:?}"
    );
}

#[test]
fn the_application_layer_holds_no_wire_types() {
    let offending: Vec<String> = direct_dependencies("trackhrs-app")
        .into_iter()
        .filter(|d| ["trackhrs-schemas", "tonic", "prost", GATEWAY].contains(&d.as_str()))
        .collect();
    assert!(
        offending.is_empty(),
        "trackhrs-app speaks the domain's types, not the wire's, but it depends directly on: {offending:?}"
    );
}

/// Every file under a `src/` folder of the workspace (code that ships, not
/// tests: the test-kit is left out), with its path relative to the
/// workspace root.
fn shipped_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, in_src: bool, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let skipped = ["target", "node_modules", "testkit"];
                if !name.starts_with('.') && !skipped.contains(&name.as_str()) {
                    walk(&path, root, in_src || name == "src", out);
                }
            } else if in_src && (name.ends_with(".rs") || name.ends_with(".sql")) {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let relative = path.strip_prefix(root).unwrap_or(&path);
                out.push((relative.display().to_string(), text));
            }
        }
    }
    let root = workspace_root();
    let mut out = Vec::new();
    walk(&root, &root, false, &mut out);
    out
}

#[test]
fn only_the_credentials_crate_touches_the_credential_tables() {
    let tables = [
        "auth.accounts",
        "auth.invitations",
        "auth.refresh_tokens",
        "auth.device_tokens",
        "auth.signing_keys",
        "auth.login_throttle",
        "auth.secrets",
    ];
    let sources = shipped_sources();
    assert!(
        sources
            .iter()
            .any(|(path, text)| path.starts_with("credentials/") && text.contains("auth.accounts")),
        "the scan lost the credentials crate's own SQL"
    );
    let offending: Vec<String> = sources
        .iter()
        .filter(|(path, _)| !path.starts_with("credentials/"))
        .flat_map(|(path, text)| {
            tables
                .iter()
                .filter(|t| text.contains(*t))
                .map(move |t| format!("{path} names {t}"))
        })
        .collect();
    assert!(
        offending.is_empty(),
        "only trackhrs-credentials reads or writes the credential tables, but:\n  {}",
        offending.join("\n  ")
    );
}
