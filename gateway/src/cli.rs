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
    /// InferenceServices and demo models on 127.0.0.1:8080, admin on 127.0.0.1:9901
    /// (`MODELGATE_PORT` and `MODELGATE_ADMIN_PORT` move them).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Take the listening sockets over from the gateway running with the same config (send it
    /// SIGQUIT once this one has started): a restart without a refused connection.
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the config and every InferenceService manifest; exit 64 listing all errors.
    Validate,
    /// Get a credential for curl from the OpenID Connect provider (Dex) with the device flow:
    /// open the printed URL, sign in, and the token (or a ready header or cookie) is printed.
    Login(LoginArgs),
}

#[derive(Debug, clap::Args)]
struct LoginArgs {
    /// Issuer URL (default: `auth.issuer` from --config).
    #[arg(long)]
    issuer: Option<String>,
    /// OAuth client for the device flow (default: `auth.client_id` from --config).
    #[arg(long)]
    client_id: Option<String>,
    /// File holding the client's secret, for a confidential client (default with --config and
    /// no --client-id: `auth.client_secret`).
    #[arg(long)]
    client_secret_file: Option<PathBuf>,
    /// What to print: the raw ID `token`, an `Authorization` `header`, or a session `cookie`
    /// (the cookie needs --config: it is sealed with the gateway's cookie secret).
    #[arg(long, value_enum, default_value_t = Print::Header)]
    print: Print,
    /// Give up after this many seconds without a sign-in.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Print {
    Token,
    Header,
    Cookie,
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
    let mut config = Config::parse(QUICKSTART_CONFIG, "embedded quickstart")?;
    // The walk-through's ports, when 8080 and 9901 are taken (another quickstart, a test).
    let port = |var: &str| -> Result<Option<u16>, ConfigErrors> {
        match std::env::var(var) {
            Err(_) => Ok(None),
            Ok(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ConfigErrors(vec![format!("{var}={v:?} is not a port number")])),
        }
    };
    if let Some(p) = port("MODELGATE_PORT")? {
        for l in &mut config.listeners {
            l.address = with_port(&l.address, p);
        }
    }
    if let Some(p) = port("MODELGATE_ADMIN_PORT")? {
        config.admin.address = with_port(&config.admin.address, p);
    }
    config.validate("embedded quickstart", &base)
}

/// `host:port` with another port.
fn with_port(address: &str, port: u16) -> String {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    format!("{host}:{port}")
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
    // The API's objects are checked as they arrive (`/routes`); only the directory is here.
    let Some(dir) = &settings.route_dir else {
        println!("config ok; routes come from the Kubernetes API only, so no manifest is checked");
        return 0;
    };
    let files = match crate::reload::read_dir(dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            return EXIT_CONFIG;
        }
    };
    let mut catalog = Catalog::new(BuildOptions {
        overrides: settings.overrides.clone(),
        fallback: None,
        path_template: settings.path_template.clone(),
    });
    let outcome = catalog.apply(&files);
    for e in &outcome.warnings {
        eprintln!("warning: {e}");
    }
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

/// The device flow, start to finish. Prompts go to stderr; only the credential goes to stdout,
/// so `$(modelgate login ...)` captures it.
fn login(config: Option<&Path>, args: LoginArgs) -> i32 {
    let settings = match config.map(config::load).transpose() {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            return EXIT_CONFIG;
        }
    };
    let auth_settings = settings.as_ref().and_then(|s| s.auth.clone());
    let Some(issuer) = args
        .issuer
        .clone()
        .or(auth_settings.as_ref().map(|a| a.issuer.clone()))
    else {
        eprintln!("modelgate login: --issuer (or --config with an auth section) is required");
        return EXIT_CONFIG;
    };
    let Some(client_id) = args
        .client_id
        .clone()
        .or(auth_settings.as_ref().map(|a| a.client_id.clone()))
    else {
        eprintln!("modelgate login: --client-id (or --config with an auth section) is required");
        return EXIT_CONFIG;
    };
    let secret = match &args.client_secret_file {
        Some(f) => match std::fs::read_to_string(f) {
            Ok(s) => Some(s.trim_end().to_string()),
            Err(e) => {
                eprintln!("modelgate login: {}: {e}", f.display());
                return EXIT_CONFIG;
            }
        },
        None if args.client_id.is_none() => auth_settings
            .as_ref()
            .map(|a| a.client_secret.expose().to_string()),
        None => None,
    };
    if args.print == Print::Cookie && auth_settings.is_none() {
        eprintln!("modelgate login: --print cookie needs --config with the gateway's auth section (its cookie secret seals the session)");
        return EXIT_CONFIG;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("modelgate login: {e}");
            return 1;
        }
    };
    let scopes = auth_settings
        .as_ref()
        .map(|a| a.scopes.clone())
        .unwrap_or_else(|| {
            ["openid", "profile", "email", "groups"]
                .map(String::from)
                .to_vec()
        });
    let result = runtime.block_on(async {
        let http = auth::provider::http_client();
        let meta = auth::provider::discover(&http, &issuer).await?;
        let device =
            auth::provider::device_authorize(&http, &meta, &client_id, secret.as_deref(), &scopes)
                .await?;
        let url = device
            .verification_uri_complete
            .clone()
            .unwrap_or_else(|| device.verification_uri.clone());
        eprintln!(
            "modelgate: open {url} and enter the code {}",
            device.user_code
        );
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_secs(args.timeout.min(device.expires_in.max(1)));
        let token = auth::provider::poll_device_token(
            &http,
            &meta,
            &client_id,
            secret.as_deref(),
            &device,
            deadline,
        )
        .await?;
        match (args.print, &auth_settings) {
            (Print::Token, _) => Ok(token),
            (Print::Header, _) => Ok(format!("Authorization: Bearer {token}")),
            (Print::Cookie, Some(a)) => {
                // Verified exactly as the gateway would, then sealed into a session.
                let authn = crate::authn::Authn::new(a.clone());
                authn.discover_now().await?;
                let now = crate::authn::now();
                let identity = authn.verify_jwt(&token, now).await?;
                Ok(format!("{}={}", a.cookie_name, authn.seal(identity, now)))
            }
            (Print::Cookie, None) => Err("no auth section".to_string()),
        }
    });
    match result {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(e) => {
            eprintln!("modelgate login: {e}");
            1
        }
    }
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Validate) => validate(cli.config.as_deref()),
        Some(Command::Login(args)) => login(cli.config.as_deref(), args),
        None => match settings(cli.config.as_deref()) {
            Ok(s) => {
                crate::server::init_logging(&s);
                crate::server::run(s, cli.upgrade)
            }
            Err(errors) => {
                eprintln!("{errors}");
                EXIT_CONFIG
            }
        },
    }
}
