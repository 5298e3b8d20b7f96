//! The command line: `modelgate [--config FILE]` runs the gateway (the embedded quickstart when
//! no file is given); `modelgate validate --config FILE` checks a config and every manifest.

use crate::config::{self, Config, ConfigErrors, Settings};
use clap::{Parser, Subcommand};
use routes::{BuildOptions, Catalog};
use std::path::{Path, PathBuf};

/// `EX_USAGE` from sysexits.h: the configuration is wrong.
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "modelgate",
    version,
    about = "Ingress gateway for KServe model serving"
)]
struct Cli {
    /// Gateway config file (YAML). Without it, the embedded quickstart runs: example
    /// InferenceServices and demo models on 127.0.0.1:8080, admin on 127.0.0.1:9901.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the config and every InferenceService manifest; exit 64 listing all errors.
    Validate,
}

const QUICKSTART_CONFIG: &str = include_str!("../../examples/quickstart/modelgate.yaml");
const QUICKSTART_MANIFESTS: [(&str, &str); 3] = [
    (
        "sklearn-iris.yaml",
        include_str!("../../examples/quickstart/isvc/sklearn-iris.yaml"),
    ),
    (
        "xgboost-iris.yaml",
        include_str!("../../examples/quickstart/isvc/xgboost-iris.yaml"),
    ),
    (
        "torch-iris.yaml",
        include_str!("../../examples/quickstart/isvc/torch-iris.yaml"),
    ),
];

/// The embedded quickstart. From a checkout it watches `examples/quickstart/isvc`, so editing a
/// manifest there shows a hot reload; anywhere else it writes its manifests to a temporary
/// directory first (and says where).
fn quickstart() -> Result<Settings, ConfigErrors> {
    let checkout = Path::new("examples/quickstart");
    let base = if checkout.join("isvc").is_dir() {
        checkout.to_path_buf()
    } else {
        let dir = std::env::temp_dir().join(format!("modelgate-quickstart-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir.join("isvc"))?;
            for (name, text) in QUICKSTART_MANIFESTS {
                std::fs::write(dir.join("isvc").join(name), text)?;
            }
            Ok(())
        };
        write().map_err(|e| ConfigErrors(vec![format!("{}: {e}", dir.display())]))?;
        eprintln!(
            "modelgate: quickstart manifests written to {}",
            dir.join("isvc").display()
        );
        dir
    };
    Config::parse(QUICKSTART_CONFIG, "embedded quickstart")?.validate("embedded quickstart", &base)
}

fn settings(path: Option<&Path>) -> Result<Settings, ConfigErrors> {
    match path {
        Some(p) => config::load(p),
        None => quickstart(),
    }
}

/// Prints every problem in the config and the manifests; 0 when there are none.
fn validate(path: Option<&Path>) -> i32 {
    let settings = match settings(path) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return EXIT_CONFIG;
        }
    };
    let files = match crate::reload::read_dir(&settings.route_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", settings.route_dir.display());
            return EXIT_CONFIG;
        }
    };
    let mut catalog = Catalog::new(BuildOptions {
        overrides: settings.overrides.clone(),
        fallback: None,
    });
    let outcome = catalog.apply(&files);
    for e in &outcome.errors {
        eprintln!("{e}");
    }
    if !outcome.errors.is_empty() {
        eprintln!("{} error(s)", outcome.errors.len());
        return EXIT_CONFIG;
    }
    println!(
        "ok: {} files, {} InferenceServices routed, {} hosts",
        files.len(),
        catalog.routed_objects(),
        outcome.table.len()
    );
    0
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate) => validate(cli.config.as_deref()),
        None => match settings(cli.config.as_deref()) {
            Ok(s) => {
                crate::server::init_logging(&s);
                crate::server::run(s)
            }
            Err(errors) => {
                eprintln!("{errors}");
                EXIT_CONFIG
            }
        },
    }
}
