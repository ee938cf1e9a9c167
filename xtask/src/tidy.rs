//! `cargo xtask tidy`: repository rules that rustc, clippy and rustfmt do not check.
//!
//! Each rule is one function over in-memory text (or `cargo metadata` JSON) returning the
//! violations it found, so each can be tested without touching the real tree. [`run`] gathers
//! the files, applies every rule and returns all violations; the caller prints them as
//! `file:line: rule: message` and fails if there is any.
//!
//! The rules are textual on purpose (no parser): they look at whole lines, skip lines that are
//! entirely `//` comments, and do not understand strings or block comments. That is enough for
//! code written to this repository's standards and keeps tidy fast and dependency-free.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::json::Json;

/// The layer table: which workspace packages each workspace package may depend on.
///
/// Dependencies point down only (see ARCHITECTURE.md). Normal, build and dev dependencies are
/// all held to the same set: a test may use a lower layer, never a higher one. The one
/// exception is [`Allowed::Support`]: any package may use it, a library only as a
/// dev-dependency. A new workspace package must be added here, either as a library with its
/// allowed set, as [`Allowed::Support`] or as a [`Allowed::Tool`].
pub const LAYERS: &[(&str, Allowed)] = &[
    ("header-bits", Allowed::Only(&[])),
    ("segment", Allowed::Only(&[])),
    ("iobuf", Allowed::Only(&["header-bits", "segment"])),
    (
        "recovery",
        Allowed::Only(&["iobuf", "segment", "header-bits"]),
    ),
    (
        "pagecache",
        Allowed::Only(&["header-bits", "segment", "iobuf", "recovery"]),
    ),
    ("bench-support", Allowed::Support),
    ("xtask", Allowed::Tool),
    ("stress", Allowed::Tool),
];

/// What one workspace package may depend on inside the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// A library layer: only these workspace packages.
    Only(&'static [&'static str]),
    /// A binary or tool (xtask, the stress program): any workspace package. Nothing may depend
    /// on a tool, because no library lists one.
    Tool,
    /// Scaffolding for benchmarks and tools (bench-support), not part of the engine: it uses
    /// no workspace package; a library may use it only as a dev-dependency (for its examples
    /// and tests), a tool as any kind.
    Support,
}

/// Names of the rules, as printed in each violation.
pub mod rule {
    /// `lib.rs` / `main.rs` must open with a `//!` doc.
    pub const MODULE_DOC: &str = "module-doc";
    /// `unsafe {` / `unsafe impl` needs a `SAFETY:` comment just above.
    pub const SAFETY_COMMENT: &str = "safety-comment";
    /// No `todo!`, `unimplemented!`, `dbg!` in library sources.
    pub const BANNED_MACRO: &str = "banned-macro";
    /// Workspace dependencies must follow [`super::LAYERS`].
    pub const DEPENDENCY_DIRECTION: &str = "dependency-direction";
}

/// One broken rule at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// File, relative to the repository root where possible.
    pub path: String,
    /// 1-based line number, when the rule can name one.
    pub line: Option<usize>,
    /// Which rule (one of the [`rule`] constants).
    pub rule: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}: {}", self.path, line, self.rule, self.message),
            None => write!(f, "{}: {}: {}", self.path, self.rule, self.message),
        }
    }
}

/// Rule `module-doc`: the first non-empty line must start with `//!`.
pub fn check_module_doc(path: &str, text: &str) -> Option<Violation> {
    let first = text
        .lines()
        .enumerate()
        .find(|(_, line)| !line.trim().is_empty());
    match first {
        Some((_, line)) if line.trim_start().starts_with("//!") => None,
        found => Some(Violation {
            path: path.to_owned(),
            line: Some(found.map_or(1, |(idx, _)| idx + 1)),
            rule: rule::MODULE_DOC,
            message: "the crate root must open with a `//!` doc (purpose, invariants, what the \
                      crate deliberately does not do)"
                .to_owned(),
        }),
    }
}

/// Rule `safety-comment`: every code line containing `unsafe {` or `unsafe impl` needs a
/// comment containing `SAFETY:` above it. Between that comment and the line there may be more
/// `//` comment lines and `#[...]` attribute lines, nothing else (not even a blank line).
pub fn check_safety_comments(path: &str, text: &str) -> Vec<Violation> {
    let lines: Vec<&str> = text.lines().collect();
    let mut violations = Vec::new();
    for (idx, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") || !has_unsafe_block_or_impl(code) {
            continue;
        }
        let justified = lines[..idx]
            .iter()
            .rev()
            .map(|above| above.trim_start())
            .take_while(|above| above.starts_with("//") || above.starts_with("#["))
            .any(|above| above.starts_with("//") && above.contains("SAFETY:"));
        if !justified {
            violations.push(Violation {
                path: path.to_owned(),
                line: Some(idx + 1),
                rule: rule::SAFETY_COMMENT,
                message: "`unsafe` without a `// SAFETY:` comment on the line(s) just above \
                          naming the invariant it relies on"
                    .to_owned(),
            });
        }
    }
    violations
}

/// True if `code` has the word `unsafe` followed (after optional spaces) by `{` or `impl`.
fn has_unsafe_block_or_impl(code: &str) -> bool {
    find_words(code, "unsafe").any(|end| {
        let rest = code[end..].trim_start();
        rest.starts_with('{') || starts_with_word(rest, "impl")
    })
}

/// Byte offsets just past each occurrence of `word` in `code` that stands as a whole
/// identifier (not part of a longer one).
fn find_words<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(word).filter_map(move |(start, _)| {
        let end = start + word.len();
        let before_ok = !code[..start].chars().next_back().is_some_and(is_ident_char);
        let after_ok = !code[end..].chars().next().is_some_and(is_ident_char);
        (before_ok && after_ok).then_some(end)
    })
}

fn starts_with_word(text: &str, word: &str) -> bool {
    text.strip_prefix(word)
        .is_some_and(|rest| !rest.chars().next().is_some_and(is_ident_char))
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Macros that must not appear in library sources.
pub const BANNED_MACROS: &[&str] = &["todo", "unimplemented", "dbg"];

/// Rule `banned-macro`: no `todo!`, `unimplemented!` or `dbg!` anywhere in a library source
/// file (`crates/*/src/**/*.rs`), including its `#[cfg(test)]` modules: telling those apart
/// textually is unreliable, and tests do not need these macros either. Lines that are entirely
/// `//` comments are skipped, so docs may name the macros.
pub fn check_banned_macros(path: &str, text: &str) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for name in BANNED_MACROS {
            let invoked = find_words(code, name).any(|end| code[end..].starts_with('!'));
            if invoked {
                violations.push(Violation {
                    path: path.to_owned(),
                    line: Some(idx + 1),
                    rule: rule::BANNED_MACRO,
                    message: format!("`{name}!` is not allowed in library code (crates/*/src)"),
                });
            }
        }
    }
    violations
}

/// Rule `dependency-direction`, over the JSON printed by
/// `cargo metadata --format-version 1 --no-deps`.
///
/// A dependency counts as a workspace dependency when it has a `path` and its package name is
/// one of the workspace's packages (so a crates.io crate that happens to share a name is not
/// confused with ours). Manifest paths are reported relative to `workspace_root`;
/// `manifest_line(manifest, dependency)` may name the line of the manifest that declares the
/// dependency (tests pass one that knows nothing).
pub fn check_dependency_direction(
    metadata_json: &str,
    layers: &[(&str, Allowed)],
    manifest_line: impl Fn(&str, &str) -> Option<usize>,
) -> Result<Vec<Violation>, String> {
    let metadata = Json::parse(metadata_json).map_err(|e| format!("cargo metadata: {e}"))?;
    let root = metadata
        .get("workspace_root")
        .and_then(Json::as_str)
        .unwrap_or("");
    let packages = metadata
        .get("packages")
        .and_then(Json::as_array)
        .ok_or("cargo metadata: no `packages` array")?;
    let names: Vec<&str> = packages
        .iter()
        .filter_map(|p| p.get("name").and_then(Json::as_str))
        .collect();

    let mut violations = Vec::new();
    for package in packages {
        let name = package
            .get("name")
            .and_then(Json::as_str)
            .ok_or("package without a name")?;
        let manifest = package
            .get("manifest_path")
            .and_then(Json::as_str)
            .unwrap_or(name);
        let manifest = relative_to(manifest, root);
        let allowed = match layers.iter().find(|(layer, _)| *layer == name) {
            Some((_, Allowed::Tool)) => continue,
            Some((_, Allowed::Only(allowed))) => *allowed,
            Some((_, Allowed::Support)) => &[],
            None => {
                violations.push(Violation {
                    path: manifest,
                    line: None,
                    rule: rule::DEPENDENCY_DIRECTION,
                    message: format!(
                        "workspace package `{name}` is not in the layer table: add it to \
                         LAYERS in xtask/src/tidy.rs, as a library with the packages it may \
                         use, as a tool, or as support (used by libraries only as a \
                         dev-dependency)"
                    ),
                });
                continue;
            }
        };
        let deps = package
            .get("dependencies")
            .and_then(Json::as_array)
            .unwrap_or(&[]);
        for dep in deps {
            let Some(dep_name) = dep.get("name").and_then(Json::as_str) else {
                continue;
            };
            let is_path = dep.get("path").and_then(Json::as_str).is_some();
            if !is_path || !names.contains(&dep_name) || allowed.contains(&dep_name) {
                continue;
            }
            let kind = dep.get("kind").and_then(Json::as_str).unwrap_or("normal");
            let is_support = layers
                .iter()
                .any(|(layer, a)| *layer == dep_name && *a == Allowed::Support);
            if is_support {
                if kind != "dev" {
                    violations.push(Violation {
                        path: manifest.clone(),
                        line: manifest_line(&manifest, dep_name),
                        rule: rule::DEPENDENCY_DIRECTION,
                        message: format!(
                            "`{name}` has a {kind} dependency on `{dep_name}`, which a library \
                             may use only as a dev-dependency (scaffolding for benchmarks, not \
                             part of the engine; see LAYERS in xtask/src/tidy.rs)"
                        ),
                    });
                }
                continue;
            }
            let may_use = if allowed.is_empty() {
                "no workspace package".to_owned()
            } else {
                format!("only {}", allowed.join(", "))
            };
            violations.push(Violation {
                path: manifest.clone(),
                line: manifest_line(&manifest, dep_name),
                rule: rule::DEPENDENCY_DIRECTION,
                message: format!(
                    "`{name}` has a {kind} dependency on `{dep_name}`, but may use {may_use} \
                     (dependencies point down the layers; see LAYERS in xtask/src/tidy.rs)"
                ),
            });
        }
    }
    Ok(violations)
}

fn relative_to(path: &str, root: &str) -> String {
    if root.is_empty() {
        return path.to_owned();
    }
    Path::new(path)
        .strip_prefix(root)
        .map_or_else(|_| path.to_owned(), |p| p.display().to_string())
}

/// The 1-based line of the manifest at `root/manifest` that declares `dep`: the first line
/// starting with the dependency's name, as in `iobuf.workspace = true` or `iobuf = { .. }`.
fn manifest_line(root: &Path, manifest: &str, dep: &str) -> Option<usize> {
    let text = fs::read_to_string(root.join(manifest)).ok()?;
    let idx = text.lines().position(|line| {
        let line = line.trim_start();
        line.strip_prefix(dep)
            .is_some_and(|rest| rest.starts_with(['.', ' ', '=']))
    })?;
    Some(idx + 1)
}

/// Applies the file rules to the tree under `root`:
/// `module-doc` on each `crates/*/src/lib.rs` (or `main.rs` for a crate without a library) and
/// on `xtask/src/main.rs`; `safety-comment` on every `crates/**/*.rs`; `banned-macro` on every
/// `crates/*/src/**/*.rs`.
pub fn check_tree(root: &Path) -> Result<Vec<Violation>, String> {
    let mut violations = Vec::new();
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
    };
    let display = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string()
    };

    let crates_dir = root.join("crates");
    let mut crate_dirs = list_dir(&crates_dir)?;
    crate_dirs.retain(|p| p.is_dir());
    let mut roots: Vec<PathBuf> = crate_dirs
        .iter()
        .filter_map(|dir| {
            let lib = dir.join("src/lib.rs");
            let main = dir.join("src/main.rs");
            if lib.is_file() {
                Some(lib)
            } else if main.is_file() {
                Some(main)
            } else {
                None
            }
        })
        .collect();
    let xtask_main = root.join("xtask/src/main.rs");
    if xtask_main.is_file() {
        roots.push(xtask_main);
    }
    for path in &roots {
        violations.extend(check_module_doc(&display(path), &read(path)?));
    }

    let mut rust_files = Vec::new();
    collect_rust_files(&crates_dir, &mut rust_files)?;
    for path in &rust_files {
        let text = read(path)?;
        let shown = display(path);
        violations.extend(check_safety_comments(&shown, &text));
        let in_src = crate_dirs
            .iter()
            .any(|dir| path.starts_with(dir.join("src")));
        if in_src {
            violations.extend(check_banned_macros(&shown, &text));
        }
    }
    Ok(violations)
}

/// Sorted entries of `dir`; an absent directory has none.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries = fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(
            entry
                .map_err(|e| format!("listing {}: {e}", dir.display()))?
                .path(),
        );
    }
    paths.sort();
    Ok(paths)
}

/// Every `.rs` file under `dir`, skipping hidden directories and build output (`target`).
fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    for path in list_dir(dir)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                collect_rust_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs every rule on the repository at `root` (file rules, then dependency direction from
/// `cargo metadata`) and returns all violations.
pub fn run(root: &Path) -> Result<Vec<Violation>, String> {
    let mut violations = check_tree(root)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("running cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let json = String::from_utf8(output.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let lookup = |manifest: &str, dep: &str| manifest_line(root, manifest, dep);
    violations.extend(check_dependency_direction(&json, LAYERS, lookup)?);
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    // ---- module-doc ----

    #[test]
    fn module_doc_passes_when_first_line_is_inner_doc() {
        assert_eq!(
            check_module_doc("lib.rs", "\n\n//! Purpose.\n#![forbid(unsafe_code)]\n"),
            None
        );
    }

    #[test]
    fn module_doc_fails_without_inner_doc() {
        let v = check_module_doc("a/lib.rs", "\n#![no_std]\n//! Too late.\n").unwrap();
        assert_eq!((v.line, v.rule), (Some(2), rule::MODULE_DOC));
        assert!(v.to_string().starts_with("a/lib.rs:2: module-doc: "));
        // An outer doc or plain comment is not a crate doc; nor is an empty file.
        assert!(check_module_doc("lib.rs", "/// Outer.\nfn f() {}\n").is_some());
        assert!(check_module_doc("lib.rs", "// Plain.\n").is_some());
        assert_eq!(check_module_doc("lib.rs", "").unwrap().line, Some(1));
    }

    // ---- safety-comment ----

    #[test]
    fn safety_comment_passes_when_justified() {
        let good = "\
fn f(p: *const u8) -> u8 {
    // SAFETY: `p` is valid for reads; the caller holds the buffer.
    unsafe { *p }
}
// SAFETY: the only field is an atomic.
// More explanation on a second line.
#[allow(dead_code)]
unsafe impl Sync for S {}
/// Doc mentioning unsafe { in a comment line is fine.
unsafe fn g() {}
let unsafe_count = 1; // `unsafe_count {` is not the keyword
";
        assert_eq!(check_safety_comments("x.rs", good), vec![]);
    }

    #[test]
    fn safety_comment_fails_when_missing_or_separated() {
        let bad = "\
fn f(p: *const u8) -> u8 {
    unsafe { *p }
}
// SAFETY: separated by a blank line, so it does not count.

unsafe impl Send for S {}
// SAFETY: separated by code.
let x = 1;
let y = unsafe{ g() };
// Safety: wrong spelling.
unsafe impl Sync for S {}
";
        let lines: Vec<_> = check_safety_comments("x.rs", bad)
            .iter()
            .map(|v| v.line.unwrap())
            .collect();
        assert_eq!(lines, vec![2, 6, 9, 11]);
    }

    // ---- banned-macro ----

    #[test]
    fn banned_macro_passes_on_clean_code() {
        let good = "\
//! Never `dbg!` or `todo!` here (comment lines are skipped).
fn todo_list() -> Vec<u8> { vec![] }
fn f() { let my_dbg = 1; mydbg!(x); assert!(true); }
";
        assert_eq!(check_banned_macros("lib.rs", good), vec![]);
    }

    #[test]
    fn banned_macro_fails_on_each_macro() {
        let bad = "\
fn f() {
    dbg!(1);
    let x = todo!();
}
#[cfg(test)]
mod tests { fn t() { unimplemented!() } }
";
        let found: Vec<_> = check_banned_macros("lib.rs", bad)
            .iter()
            .map(|v| {
                (
                    v.line.unwrap(),
                    v.message.split('`').nth(1).unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (2, "dbg!".to_owned()),
                (3, "todo!".to_owned()),
                (6, "unimplemented!".to_owned())
            ]
        );
    }

    // ---- dependency-direction ----

    fn package(name: &str, deps: &[(&str, Option<&str>, bool)]) -> String {
        let deps: Vec<String> = deps
            .iter()
            .map(|(dep, kind, is_path)| {
                let kind = kind.map_or("null".to_owned(), |k| format!("\"{k}\""));
                let path = if *is_path {
                    format!(r#", "path": "/ws/crates/{dep}""#)
                } else {
                    String::new()
                };
                format!(r#"{{"name": "{dep}", "kind": {kind}, "rename": null{path}}}"#)
            })
            .collect();
        format!(
            r#"{{"name": "{name}", "manifest_path": "/ws/crates/{name}/Cargo.toml", "dependencies": [{}]}}"#,
            deps.join(", ")
        )
    }

    fn no_lines(_manifest: &str, _dep: &str) -> Option<usize> {
        None
    }

    fn metadata(packages: &[String]) -> String {
        format!(
            r#"{{"packages": [{}], "workspace_root": "/ws"}}"#,
            packages.join(", ")
        )
    }

    #[test]
    fn dependency_direction_passes_on_downward_deps() {
        let json = metadata(&[
            package("header-bits", &[("proptest", Some("dev"), false)]),
            package("segment", &[("thiserror", None, false)]),
            package(
                "iobuf",
                &[
                    ("header-bits", None, true),
                    ("segment", Some("build"), true),
                ],
            ),
            package(
                "recovery",
                &[("iobuf", None, true), ("header-bits", Some("dev"), true)],
            ),
            package(
                "pagecache",
                &[
                    ("recovery", None, true),
                    ("bench-support", Some("dev"), true),
                ],
            ),
            package("bench-support", &[]),
            package(
                "xtask",
                &[("pagecache", None, true), ("bench-support", None, true)],
            ),
        ]);
        assert_eq!(
            check_dependency_direction(&json, LAYERS, no_lines).unwrap(),
            vec![]
        );
    }

    #[test]
    fn dependency_direction_fails_on_upward_or_unknown() {
        let json = metadata(&[
            package("segment", &[("iobuf", Some("dev"), true)]),
            package("iobuf", &[("recovery", None, true), ("xtask", None, true)]),
            package("recovery", &[]),
            package("xtask", &[]),
            package("newcrate", &[]),
        ]);
        let violations = check_dependency_direction(&json, LAYERS, no_lines).unwrap();
        let shown: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
        assert_eq!(shown.len(), 4, "{shown:#?}");
        assert!(shown[0].starts_with("crates/segment/Cargo.toml: dependency-direction: `segment` has a dev dependency on `iobuf`"));
        assert!(shown[0].contains("but may use no workspace package"));
        assert!(shown[1].contains("`iobuf` has a normal dependency on `recovery`"));
        assert!(shown[1].contains("but may use only header-bits, segment"));
        assert!(shown[2].contains("`iobuf` has a normal dependency on `xtask`"));
        assert!(shown[3].contains("`newcrate` is not in the layer table"));
    }

    #[test]
    fn support_crate_is_dev_only_for_libraries_and_uses_nothing() {
        let json = metadata(&[
            package("recovery", &[("bench-support", None, true)]),
            package("pagecache", &[("bench-support", Some("build"), true)]),
            package("bench-support", &[("segment", Some("dev"), true)]),
            package("segment", &[]),
        ]);
        let violations = check_dependency_direction(&json, LAYERS, no_lines).unwrap();
        let shown: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(shown[0].contains("`recovery` has a normal dependency on `bench-support`"));
        assert!(shown[0].contains("only as a dev-dependency"));
        assert!(shown[1].contains("`pagecache` has a build dependency on `bench-support`"));
        assert!(shown[2].contains("`bench-support` has a dev dependency on `segment`"));
        assert!(shown[2].contains("but may use no workspace package"));
    }

    #[test]
    fn dependency_direction_ignores_registry_crate_with_a_workspace_name() {
        // A crates.io crate called `recovery` is not our `recovery`: no `path`.
        let json = metadata(&[
            package("iobuf", &[("recovery", None, false)]),
            package("recovery", &[]),
        ]);
        assert_eq!(
            check_dependency_direction(&json, LAYERS, no_lines).unwrap(),
            vec![]
        );
    }

    #[test]
    fn dependency_direction_reports_bad_json() {
        assert!(check_dependency_direction("{not json", LAYERS, no_lines).is_err());
        assert!(check_dependency_direction("{}", LAYERS, no_lines).is_err());
    }

    #[test]
    fn layer_table_points_down_only() {
        // Every library's allowed set names only libraries listed before it: no cycles, no
        // tools, no typos.
        for (idx, (name, allowed)) in LAYERS.iter().enumerate() {
            if let Allowed::Only(allowed) = allowed {
                for dep in *allowed {
                    let pos = LAYERS.iter().position(|(n, _)| n == dep);
                    assert!(pos.is_some_and(|p| p < idx), "{name} may use {dep}");
                    assert!(matches!(LAYERS[pos.unwrap()].1, Allowed::Only(_)));
                }
            }
        }
    }

    // ---- the tree walk, on a temporary directory ----

    struct TempTree(PathBuf);

    impl TempTree {
        fn new() -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("xtask-tidy-test-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempTree(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for TempTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn tree_passes_when_clean() {
        let tree = TempTree::new();
        tree.write("crates/a/src/lib.rs", "//! A.\nmod inner;\n");
        tree.write(
            "crates/a/src/inner.rs",
            "// SAFETY: fine.\nunsafe impl Send for X {}\n",
        );
        tree.write("crates/a/tests/t.rs", "#[test]\nfn t() { dbg!(1); }\n");
        tree.write("crates/b/src/main.rs", "//! B tool.\nfn main() {}\n");
        tree.write("crates/a/target/debug/junk.rs", "unsafe { }\n");
        tree.write("xtask/src/main.rs", "//! Automation.\nfn main() {}\n");
        assert_eq!(check_tree(&tree.0).unwrap(), vec![]);
    }

    #[test]
    fn tree_reports_every_rule_with_relative_paths() {
        let tree = TempTree::new();
        tree.write("crates/a/src/lib.rs", "#![no_std]\n");
        tree.write("crates/a/src/deep/inner.rs", "fn f() {\n    todo!()\n}\n");
        tree.write("crates/a/tests/t.rs", "fn t() { unsafe { g() } }\n");
        tree.write("xtask/src/main.rs", "fn main() {}\n");
        let shown: Vec<String> = check_tree(&tree.0)
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(shown.len(), 4, "{shown:#?}");
        assert!(shown[0].starts_with("crates/a/src/lib.rs:1: module-doc"));
        assert!(shown[1].starts_with("xtask/src/main.rs:1: module-doc"));
        assert!(shown[2].starts_with("crates/a/src/deep/inner.rs:2: banned-macro"));
        assert!(shown[3].starts_with("crates/a/tests/t.rs:1: safety-comment"));
    }
}
