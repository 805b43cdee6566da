//! The Debian package end to end (CI runs as root on Debian): build it with
//! packaging/build-deb.sh from the already built binary, `dpkg -i`, run
//! `agent validate -c /etc/agent`, `systemd-analyze verify` on the installed
//! unit (its man page too), `dpkg -r` (conffiles kept), `dpkg -P` (nothing left).
use std::path::Path;
use std::process::{Command, Output};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(program: &str, args: &[&str], what_provides: &str) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): {what_provides}"))
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Purges the package however the test ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "agent"]).output();
    }
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() {
                out.extend(files_under(&p));
            }
        }
    }
    out
}

#[test]
fn deb_installs_validates_keeps_conffiles_on_remove_and_purges_clean() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "this test installs a package with dpkg and must run as root (CI does)"
    );
    ok(
        &run("dpkg", &["--version"], "dpkg is Debian's package tool"),
        "dpkg --version",
    );
    ok(
        &run(
            "cargo",
            &["deb", "--version"],
            "cargo is needed to run cargo-deb",
        ),
        "cargo deb --version (install it: cargo install cargo-deb --locked; .ci/run does)",
    );
    let status = run("dpkg-query", &["-W", "-f=${Status}", "agent"], "dpkg");
    assert!(
        !text(&status.stdout).contains("installed"),
        "a package `agent` is already installed here; not touching it"
    );
    assert!(
        !Path::new("/usr/bin/agent").exists() && !Path::new("/etc/agent").exists(),
        "/usr/bin/agent or /etc/agent exists outside the package; not touching it"
    );

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out_dir = tempfile::tempdir().unwrap();
    let build = Command::new(repo.join("packaging/build-deb.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_agent"))
        .arg("--output")
        .arg(out_dir.path())
        .output()
        .expect("packaging/build-deb.sh runs");
    ok(&build, "packaging/build-deb.sh");
    let deb = text(&build.stdout).lines().last().unwrap_or("").to_string();
    assert!(deb.ends_with(".deb") && Path::new(&deb).is_file(), "{deb}");

    let contents = run("dpkg-deb", &["-c", &deb], "dpkg");
    ok(&contents, "dpkg-deb -c");
    let listing = text(&contents.stdout);
    for path in [
        "./usr/bin/agent",
        "./etc/agent/main.yaml",
        "./etc/agent/input/ping.yaml",
        "/systemd/system/agent.service",
        "./usr/share/man/man1/agent.1.gz",
        "./usr/share/bash-completion/completions/agent",
        "./usr/share/zsh/vendor-completions/_agent",
        "./usr/share/fish/vendor_completions.d/agent.fish",
    ] {
        assert!(
            listing.contains(path),
            "{path} not in the package:\n{listing}"
        );
    }
    // Every file of the shipped etc/ is in the package, under /etc/agent.
    let etc = repo.join("etc");
    for f in files_under(&etc) {
        let rel = Path::new(&f)
            .strip_prefix(&etc)
            .unwrap()
            .display()
            .to_string();
        if Path::new(&f).is_file() {
            let want = format!("./etc/agent/{rel}");
            assert!(listing.contains(&want), "{want} not in the package");
        }
    }
    let name = run("dpkg-deb", &["-f", &deb, "Package"], "dpkg");
    assert_eq!(text(&name.stdout).trim(), "agent");

    let _purge = Purge;
    ok(&run("dpkg", &["-i", &deb], "dpkg"), "dpkg -i");
    let validate = run(
        "/usr/bin/agent",
        &["validate", "-c", "/etc/agent"],
        "installed",
    );
    ok(&validate, "agent validate -c /etc/agent");
    assert!(
        text(&validate.stdout).contains("/etc/agent: valid"),
        "{}",
        text(&validate.stdout)
    );
    // The installed unit verifies against the installed binary.
    let unit = [
        "/lib/systemd/system/agent.service",
        "/usr/lib/systemd/system/agent.service",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file())
    .expect("the unit is installed");
    // Its Documentation=man:agent(1) resolves to the installed man page.
    ok(
        &run(
            "man",
            &["-w", "agent"],
            "install the Debian package `man-db` (.ci/apt-packages.txt)",
        ),
        "man -w agent",
    );
    ok(
        &run(
            "systemd-analyze",
            &["verify", unit],
            "install the Debian package `systemd` (.ci/apt-packages.txt)",
        ),
        "systemd-analyze verify on the installed unit (man page included)",
    );
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/agent").unwrap();
    assert!(
        bash.contains("validate") && bash.contains("sample-config"),
        "bash completion"
    );
    let conf = run("dpkg-query", &["-W", "-f=${Conffiles}", "agent"], "dpkg");
    assert!(
        text(&conf.stdout).contains("/etc/agent/main.yaml"),
        "{}",
        text(&conf.stdout)
    );

    ok(&run("dpkg", &["-r", "agent"], "dpkg"), "dpkg -r");
    assert!(
        !Path::new("/usr/bin/agent").exists(),
        "binary removed by dpkg -r"
    );
    assert!(
        Path::new("/etc/agent/main.yaml").is_file(),
        "conffiles are kept by dpkg -r"
    );
    let status = run("dpkg-query", &["-W", "-f=${Status}", "agent"], "dpkg");
    assert_eq!(text(&status.stdout), "deinstall ok config-files");

    ok(&run("dpkg", &["-P", "agent"], "dpkg"), "dpkg -P");
    let left = files_under(Path::new("/etc/agent"));
    assert!(
        left.is_empty(),
        "left under /etc/agent after purge: {left:?}"
    );
    assert!(
        !Path::new("/etc/agent").exists(),
        "/etc/agent removed by purge"
    );
    assert!(!Path::new("/usr/bin/agent").exists());
    assert!(!Path::new(unit).exists(), "unit removed");
    let status = run("dpkg-query", &["-W", "-f=${Status}", "agent"], "dpkg");
    assert!(
        !text(&status.stdout).contains("installed"),
        "{}",
        text(&status.stdout)
    );
}
