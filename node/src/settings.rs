//! `gpumesh node` settings: flags, `GPUMESH_*` environment variables and a
//! TOML file, merged (CLI > env > file > default) and validated into an
//! immutable [`NodeSettings`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use gpumesh_membership::ClusterSecret;
use serde::{Deserialize, Serialize};

const DEFAULT_HTTP: &str = "127.0.0.1:8080";
const DEFAULT_GRPC: &str = "127.0.0.1:8001";
const DEFAULT_GOSSIP: &str = "127.0.0.1:7946";
const DEFAULT_CLUSTER: &str = "127.0.0.1:7947";
const DEFAULT_DATA_DIR: &str = "./gpumesh-data";
const DEFAULT_GOSSIP_INTERVAL_MS: u64 = 200;
const GOSSIP_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=60_000;

/// Settings of `gpumesh node`: each is a flag, an environment variable and
/// a key of the `--config` file (the field's name, `seed` for `--seed`).
#[derive(Args, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeArgs {
    /// TOML file with any of these settings (flags and env vars win).
    #[arg(long, env = "GPUMESH_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,
    /// Node id, unique in the cluster [default: stored in the data dir, generated on first start].
    #[arg(long, env = "GPUMESH_NAME")]
    pub(crate) name: Option<String>,
    /// HTTP API and status page address [default: 127.0.0.1:8080].
    #[arg(long, env = "GPUMESH_HTTP", value_name = "HOST:PORT")]
    pub(crate) http: Option<String>,
    /// KServe v2 / Triton gRPC address, or "off" [default: 127.0.0.1:8001].
    #[arg(long, env = "GPUMESH_GRPC", value_name = "HOST:PORT")]
    pub(crate) grpc: Option<String>,
    /// Gossip (UDP) address [default: 127.0.0.1:7946].
    #[arg(long, env = "GPUMESH_GOSSIP", value_name = "HOST:PORT")]
    pub(crate) gossip: Option<String>,
    /// Node-to-node actor link (TCP) address [default: 127.0.0.1:7947].
    #[arg(long, env = "GPUMESH_CLUSTER", value_name = "HOST:PORT")]
    pub(crate) cluster: Option<String>,
    /// Host other nodes use to reach this one [default: host of each listen address].
    #[arg(long, env = "GPUMESH_ADVERTISE_HOST", value_name = "HOST")]
    pub(crate) advertise_host: Option<String>,
    /// Gossip address of an existing node; repeat for several.
    #[arg(long = "seed", env = "GPUMESH_SEED", value_delimiter = ',', value_name = "HOST:PORT")]
    #[serde(rename = "seed", default)]
    pub(crate) seeds: Vec<String>,
    /// Directory of the sled store and node identity [default: ./gpumesh-data].
    #[arg(long, env = "GPUMESH_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// File with the 32-byte cluster secret (`gpumesh keygen`) [default: none, open cluster].
    #[arg(long, env = "GPUMESH_SECRET_FILE", value_name = "FILE")]
    pub(crate) secret_file: Option<PathBuf>,
    /// Model registry file [default: the bundled models/models.toml].
    #[arg(long, env = "GPUMESH_MODELS", value_name = "FILE")]
    pub(crate) models: Option<PathBuf>,
    /// Routing policy: eta, least-queue, round-robin, random or weighted-score [default: eta].
    #[arg(long, env = "GPUMESH_POLICY")]
    pub(crate) policy: Option<String>,
    /// Route language-model requests to the node whose engine likely holds the prompt's prefix, unless it is overloaded: true or false [default: true].
    #[arg(long, env = "GPUMESH_PREFIX_AFFINITY", value_name = "BOOL")]
    pub(crate) prefix_affinity: Option<bool>,
    /// Gossip period in milliseconds; failure detection is tuned with it [default: 200].
    #[arg(long, env = "GPUMESH_GOSSIP_INTERVAL_MS", value_name = "MS")]
    pub(crate) gossip_interval_ms: Option<u64>,
    /// Seconds a finished job (and a result held for another owner) is kept [default: 86400].
    #[arg(long, env = "GPUMESH_JOB_RETENTION_SECS", value_name = "SECS")]
    pub(crate) job_retention_secs: Option<u64>,
    /// Most finished jobs kept; the oldest are dropped first [default: 100000].
    #[arg(long, env = "GPUMESH_JOB_RETENTION_MAX_JOBS", value_name = "N")]
    pub(crate) job_retention_max_jobs: Option<usize>,
    /// File of client API tokens, one per line; without it the API is open [default: none].
    #[arg(long, env = "GPUMESH_API_TOKEN_FILE", value_name = "FILE")]
    pub(crate) api_token_file: Option<PathBuf>,
    /// Largest request body in bytes [default: 67108864].
    #[arg(long, env = "GPUMESH_MAX_BODY_BYTES", value_name = "BYTES")]
    pub(crate) max_body_bytes: Option<usize>,
    /// Most elements in one tensor of a request [default: 16777216].
    #[arg(long, env = "GPUMESH_MAX_TENSOR_ELEMENTS", value_name = "N")]
    pub(crate) max_tensor_elements: Option<usize>,
    /// Most inputs (and requested outputs) in one request [default: 256].
    #[arg(long, env = "GPUMESH_MAX_INPUTS", value_name = "N")]
    pub(crate) max_inputs: Option<usize>,
    /// Most client connections served at once; more wait until one closes [default: 1024].
    #[arg(long, env = "GPUMESH_MAX_CONNECTIONS", value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    /// Most nodes one request is tried on before it fails [default: 3].
    #[arg(long, env = "GPUMESH_MAX_FORWARD_ATTEMPTS", value_name = "N")]
    pub(crate) max_forward_attempts: Option<usize>,
    /// PEM certificate of this node for TLS on node-to-node links, signed by --cluster-ca [default: plain TCP].
    #[arg(long, env = "GPUMESH_CLUSTER_TLS_CERT", value_name = "FILE")]
    pub(crate) cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert.
    #[arg(long, env = "GPUMESH_CLUSTER_TLS_KEY", value_name = "FILE")]
    pub(crate) cluster_tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signs every node's link certificate.
    #[arg(long, env = "GPUMESH_CLUSTER_CA", value_name = "FILE")]
    pub(crate) cluster_ca: Option<PathBuf>,
    /// PEM certificate the gRPC server presents (TLS on --grpc) [default: plain gRPC].
    #[arg(long, env = "GPUMESH_GRPC_TLS_CERT", value_name = "FILE")]
    pub(crate) grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, env = "GPUMESH_GRPC_TLS_KEY", value_name = "FILE")]
    pub(crate) grpc_tls_key: Option<PathBuf>,
    /// Seconds a client connection may stay silent both ways before it is closed [default: 120].
    #[arg(long, env = "GPUMESH_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    pub(crate) idle_timeout_secs: Option<u64>,
    /// Most jobs accepted here and not yet finished; more submits get 429 [default: 100000].
    #[arg(long, env = "GPUMESH_MAX_ACTIVE_JOBS", value_name = "N")]
    pub(crate) max_active_jobs: Option<u64>,
    /// Most connections one client address holds at once; more are closed at once [default: 256].
    #[arg(long, env = "GPUMESH_MAX_CLIENT_CONNECTIONS", value_name = "N")]
    pub(crate) max_client_connections: Option<usize>,
    /// Seconds a request's headers may take to arrive before the connection is closed [default: 30].
    #[arg(long, env = "GPUMESH_HEADER_TIMEOUT_SECS", value_name = "SECS")]
    pub(crate) header_timeout_secs: Option<u64>,
    /// Least rate of a request body after its first 2 s, bytes a second; slower gets 408; 0: none [default: 1024].
    #[arg(long, env = "GPUMESH_MIN_BODY_RATE", value_name = "BYTES")]
    pub(crate) min_body_rate: Option<u64>,
}

/// Validated settings of one node.
#[derive(Debug)]
pub(crate) struct NodeSettings {
    pub(crate) name: Option<String>,
    pub(crate) http_listen: SocketAddr,
    /// `None`: no gRPC (`--grpc off`).
    pub(crate) grpc_listen: Option<SocketAddr>,
    pub(crate) grpc_tls: Option<gpumesh_web::GrpcTls>,
    pub(crate) gossip_listen: SocketAddr,
    pub(crate) cluster_listen: SocketAddr,
    pub(crate) advertise_host: Option<String>,
    pub(crate) seeds: Vec<String>,
    pub(crate) data_dir: PathBuf,
    pub(crate) secret: Option<ClusterSecret>,
    pub(crate) gossip_interval: Duration,
    pub(crate) models: Vec<gpumesh_actors::ModelSpec>,
    pub(crate) policy: gpumesh_actors::Policy,
    pub(crate) prefix_affinity: bool,
    pub(crate) job_retention: gpumesh_storage::jobs::Retention,
    pub(crate) http: gpumesh_web::HttpOptions,
    pub(crate) max_forward_attempts: usize,
    pub(crate) cluster_tls: Option<gpumesh_actors::ClusterTls>,
    pub(crate) max_active_jobs: u64,
}

impl NodeArgs {
    /// Merges flags/env with the config file and validates the result.
    pub(crate) fn resolve(self) -> anyhow::Result<NodeSettings> {
        let file = match &self.config {
            Some(path) => read_file_config(path)?,
            None => NodeArgs::default(),
        };
        let args = self.over(file)?;
        if let Some(name) = &args.name {
            gpumesh_membership::NodeName::new(name.as_str())?;
        }
        let (http_listen, gossip_listen, cluster_listen) = args.listen_addresses()?;
        let grpc_listen = args.grpc_address()?;
        for seed in &args.seeds {
            validate_seed(seed)?;
        }
        let gossip_interval_ms = bounded(
            "--gossip-interval-ms",
            args.gossip_interval_ms,
            DEFAULT_GOSSIP_INTERVAL_MS,
            GOSSIP_INTERVAL_MS_RANGE,
        )?;
        let secret = args.secret_file.as_deref().map(read_secret).transpose()?;
        let policy = match &args.policy {
            Some(text) => text.parse().map_err(|error: String| anyhow::anyhow!("--policy: {error}"))?,
            None => gpumesh_actors::Policy::Eta,
        };
        let job_retention = resolve_retention(args.job_retention_secs, args.job_retention_max_jobs)?;
        let http = args.http_options()?;
        let max_forward_attempts = bounded(
            "--max-forward-attempts",
            args.max_forward_attempts,
            gpumesh_actors::DEFAULT_MAX_FORWARD_ATTEMPTS,
            1..=16,
        )?;
        let max_active_jobs = bounded(
            "--max-active-jobs",
            args.max_active_jobs,
            gpumesh_actors::DEFAULT_MAX_ACTIVE_JOBS,
            1..=100_000_000,
        )?;
        let cluster_tls = resolve_tls(args.cluster_tls_cert, args.cluster_tls_key, args.cluster_ca)?;
        let grpc_tls = resolve_grpc_tls(args.grpc_tls_cert, args.grpc_tls_key)?;
        let models = match crate::models::registry_path(args.models.as_deref()) {
            Some(path) => crate::models::load_registry(&path)?,
            None => {
                tracing::warn!(
                    "no model registry found (models/models.toml): serving no models; give one with --models"
                );
                Vec::new()
            }
        };
        Ok(NodeSettings {
            http_listen,
            grpc_listen,
            grpc_tls,
            gossip_listen,
            cluster_listen,
            secret,
            gossip_interval: Duration::from_millis(gossip_interval_ms),
            models,
            policy,
            prefix_affinity: args.prefix_affinity.unwrap_or(true),
            job_retention,
            http,
            max_forward_attempts,
            cluster_tls,
            max_active_jobs,
            data_dir: args.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            name: args.name,
            advertise_host: args.advertise_host,
            seeds: args.seeds,
        })
    }

    /// These settings, each one not given taken from `file`: both are
    /// seen as maps of keys to values, and every given value of this one
    /// (not null, not an empty list) replaces the file's.
    fn over(self, file: NodeArgs) -> anyhow::Result<NodeArgs> {
        let serde_json::Value::Object(given) = serde_json::to_value(&self)? else {
            bail!("settings did not serialize as a map")
        };
        let mut merged = serde_json::to_value(&file)?;
        for (key, value) in given {
            let unset = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
            if !unset {
                merged[key] = value;
            }
        }
        let mut args: NodeArgs = serde_json::from_value(merged)?;
        args.config = self.config;
        Ok(args)
    }

    /// The HTTP, gossip and cluster listen addresses, checked together.
    fn listen_addresses(&self) -> anyhow::Result<(SocketAddr, SocketAddr, SocketAddr)> {
        let http_listen = parse_addr("--http", self.http.as_deref().unwrap_or(DEFAULT_HTTP))?;
        let gossip_listen = parse_addr("--gossip", self.gossip.as_deref().unwrap_or(DEFAULT_GOSSIP))?;
        let cluster_listen = parse_addr("--cluster", self.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER))?;
        for (flag, addr) in [("--gossip", gossip_listen), ("--cluster", cluster_listen)] {
            if addr.port() == 0 {
                bail!("port 0 is not supported for {flag}: other nodes need a fixed port to reach this one");
            }
        }
        if self.advertise_host.is_none()
            && let Some(addr) = [http_listen, gossip_listen, cluster_listen].iter().find(|a| a.ip().is_unspecified())
        {
            bail!(
                "{addr} listens on every interface; set --advertise-host to the address other nodes use to reach this machine"
            );
        }
        Ok((http_listen, gossip_listen, cluster_listen))
    }

    /// The gRPC listen address; `None` for "off".
    fn grpc_address(&self) -> anyhow::Result<Option<SocketAddr>> {
        let text = self.grpc.as_deref().unwrap_or(DEFAULT_GRPC);
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let addr = parse_addr("--grpc", text)?;
        if self.advertise_host.is_none() && addr.ip().is_unspecified() {
            bail!(
                "{addr} listens on every interface; set --advertise-host to the address other nodes use to reach this machine"
            );
        }
        Ok(Some(addr))
    }

    /// Tokens, request limits and connection bounds of the HTTP API.
    fn http_options(&self) -> anyhow::Result<gpumesh_web::HttpOptions> {
        let tokens = match &self.api_token_file {
            Some(path) => gpumesh_web::ApiTokens::new(read_tokens(path)?),
            None => gpumesh_web::ApiTokens::default(),
        };
        let defaults = gpumesh_web::Limits::default();
        let limits = gpumesh_web::Limits {
            max_body_bytes: bounded("--max-body-bytes", self.max_body_bytes, defaults.max_body_bytes, 1024..=1 << 32)?,
            max_tensor_elements: bounded(
                "--max-tensor-elements",
                self.max_tensor_elements,
                defaults.max_tensor_elements,
                1..=1 << 31,
            )?,
            max_inputs: bounded("--max-inputs", self.max_inputs, defaults.max_inputs, 1..=4096)?,
        };
        let max_connections =
            bounded("--max-connections", self.max_connections, gpumesh_web::DEFAULT_MAX_CONNECTIONS, 1..=1_000_000)?;
        let max_client_connections = bounded(
            "--max-client-connections",
            self.max_client_connections,
            gpumesh_web::DEFAULT_MAX_CLIENT_CONNECTIONS,
            1..=1_000_000,
        )?;
        let idle_timeout_secs =
            bounded("--idle-timeout-secs", self.idle_timeout_secs, gpumesh_web::DEFAULT_IDLE_TIMEOUT_SECS, 1..=86_400)?;
        let header_timeout_secs = bounded(
            "--header-timeout-secs",
            self.header_timeout_secs,
            gpumesh_web::DEFAULT_HEADER_TIMEOUT_SECS,
            1..=3600,
        )?;
        let min_body_rate =
            bounded("--min-body-rate", self.min_body_rate, gpumesh_web::DEFAULT_MIN_BODY_RATE, 0..=1 << 30)?;
        Ok(gpumesh_web::HttpOptions {
            limits,
            tokens,
            max_connections,
            max_client_connections,
            idle_timeout: Duration::from_secs(idle_timeout_secs),
            header_timeout: Duration::from_secs(header_timeout_secs),
            min_body_rate,
        })
    }
}

/// TLS for gRPC: certificate and key together, or neither.
fn resolve_grpc_tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> anyhow::Result<Option<gpumesh_web::GrpcTls>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            read_private(&key, "--grpc-tls-key", "give the PEM private key of --grpc-tls-cert")?;
            gpumesh_web::GrpcTls::from_pem_files(&cert, &key).map(Some).map_err(anyhow::Error::msg)
        }
        _ => bail!("TLS for gRPC needs --grpc-tls-cert and --grpc-tls-key together"),
    }
}

/// TLS for the links: all three files, or none.
fn resolve_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<Option<gpumesh_actors::ClusterTls>> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => {
            // The key must stay private; read_private refuses a world-readable one.
            read_private(&key, "--cluster-tls-key", "give the PEM private key of --cluster-tls-cert")?;
            gpumesh_actors::ClusterTls::from_pem_files(&cert, &key, &ca).map(Some).map_err(anyhow::Error::msg)
        }
        _ => bail!("TLS for node links needs --cluster-tls-cert, --cluster-tls-key and --cluster-ca together"),
    }
}

/// `value` (or `default`) when it lies in `range`, else a sentence naming `flag`.
fn bounded<T: PartialOrd + Copy + std::fmt::Display>(
    flag: &str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> anyhow::Result<T> {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        bail!("{flag} {value} is out of range: use {} to {}", range.start(), range.end());
    }
    Ok(value)
}

/// Reads the API token file: one token per line, blank lines and `#`
/// comments skipped; refused when every user can read it or it lists none.
pub(crate) fn read_tokens(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = read_private(path, "API token file", "put one token per line, e.g. `openssl rand -hex 32`")?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(String::from)
        .collect();
    if tokens.is_empty() {
        bail!("API token file {} lists no token: put one token per line", path.display());
    }
    if let Some(short) = tokens.iter().find(|token| token.len() < MIN_TOKEN_LEN) {
        bail!(
            "API token file {} has a token of {} characters: use at least {MIN_TOKEN_LEN}, e.g. `openssl rand -hex 32`",
            path.display(),
            short.len()
        );
    }
    Ok(tokens)
}

/// Shortest API token accepted: guessing one must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

fn resolve_retention(secs: Option<u64>, max_jobs: Option<usize>) -> anyhow::Result<gpumesh_storage::jobs::Retention> {
    let default = gpumesh_storage::jobs::Retention::default();
    let max_age_ms = match secs {
        Some(0) => bail!("--job-retention-secs 0 would drop results before clients read them: use 1 or more"),
        Some(secs) => secs.checked_mul(1000).context("--job-retention-secs is too large")?,
        None => default.max_age_ms,
    };
    let max_finished = match max_jobs {
        Some(0) => bail!("--job-retention-max-jobs 0 would drop every result at once: use 1 or more"),
        Some(jobs) => jobs,
        None => default.max_finished,
    };
    Ok(gpumesh_storage::jobs::Retention { max_age_ms, max_finished })
}

fn read_file_config(path: &Path) -> anyhow::Result<NodeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}: check the path given to --config", path.display()))?;
    toml::from_str(&text).map_err(|error| {
        anyhow::anyhow!("config file {} is invalid: {}", path.display(), error.message().trim_end_matches('\n'))
    })
}

/// Parses a `host:port` listen address, resolving names such as localhost.
pub(crate) fn parse_addr(flag: &str, text: &str) -> anyhow::Result<SocketAddr> {
    let invalid = || anyhow::anyhow!("invalid {flag} address {text:?}: expected host:port such as 127.0.0.1:8080");
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (_, port) = text.rsplit_once(':').ok_or_else(invalid)?;
    port.parse::<u16>().map_err(|_| invalid())?;
    text.to_socket_addrs().map_err(|_| invalid())?.next().ok_or_else(invalid)
}

fn validate_seed(seed: &str) -> anyhow::Result<()> {
    let valid =
        seed.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !valid {
        bail!("invalid --seed {seed:?}: expected the gossip address of a node, host:port such as 10.0.0.5:7946");
    }
    Ok(())
}

/// Reads the secret file, refusing one every user can read.
pub(crate) fn read_secret(path: &Path) -> anyhow::Result<ClusterSecret> {
    let shown = path.display();
    let text =
        read_private(path, "secret file", &format!("create one with `gpumesh keygen > {shown} && chmod 400 {shown}`"))?;
    ClusterSecret::parse(&text).with_context(|| format!("secret file {shown} is not a cluster secret"))
}

/// Reads a file that must stay private, refusing one every user can read;
/// `create` says how to make one when it is missing.
fn read_private(path: &Path, what: &str, create: &str) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    let metadata =
        std::fs::metadata(path).map_err(|error| anyhow::anyhow!("cannot read {what} {shown}: {error}; {create}"))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        bail!("{what} {shown} is readable by every user (mode {mode:o}): run `chmod 400 {shown}`");
    }
    std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("cannot read {what} {shown}: {error}; check its owner and permissions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\nhttp = \"127.0.0.1:9000\"\ngrpc = \"127.0.0.1:9001\"\ngossip_interval_ms = 50\nseed = [\"127.0.0.1:1234\"]\njob_retention_secs = 60\nmax_forward_attempts = 5\nmax_inputs = 9\npolicy = \"random\"\n",
        )
        .expect("write");
        let args = NodeArgs {
            config: Some(path),
            name: Some("from-flag".into()),
            policy: Some("least-queue".into()),
            ..NodeArgs::default()
        };
        let settings = args.resolve().expect("valid");
        assert_eq!(settings.max_forward_attempts, 5);
        assert_eq!(settings.http.limits.max_inputs, 9);
        assert_eq!(settings.policy, gpumesh_actors::Policy::LeastQueue, "the flag wins over the file");
        assert_eq!(settings.name.as_deref(), Some("from-flag"));
        assert_eq!(settings.http_listen.port(), 9000);
        assert_eq!(settings.grpc_listen.map(|addr| addr.port()), Some(9001));
        assert_eq!(settings.gossip_interval, Duration::from_millis(50));
        assert_eq!(settings.seeds, vec!["127.0.0.1:1234".to_string()]);
        assert_eq!(settings.cluster_listen.port(), 7947, "default applies");
        assert_eq!(settings.job_retention.max_age_ms, 60_000);
        assert_eq!(settings.job_retention.max_finished, 100_000, "default applies");
    }

    #[test]
    fn grpc_listens_on_8001_unless_moved_or_off() {
        let default = NodeArgs::default().resolve().expect("valid");
        assert_eq!(default.grpc_listen, Some("127.0.0.1:8001".parse().expect("addr")));
        let off = NodeArgs { grpc: Some("off".into()), ..NodeArgs::default() }.resolve().expect("valid");
        assert_eq!(off.grpc_listen, None);
        let bad = NodeArgs { grpc: Some("nonsense".into()), ..NodeArgs::default() }.resolve().expect_err("bad");
        assert!(bad.to_string().contains("--grpc"), "{bad}");
        let open = NodeArgs { grpc: Some("0.0.0.0:8001".into()), ..NodeArgs::default() }.resolve().expect_err("open");
        assert!(open.to_string().contains("--advertise-host"), "{open}");
        let half =
            NodeArgs { grpc_tls_cert: Some("cert.pem".into()), ..NodeArgs::default() }.resolve().expect_err("tls");
        assert!(half.to_string().contains("--grpc-tls-cert and --grpc-tls-key together"), "{half}");
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "htp = \"127.0.0.1:9000\"\n").expect("write");
        let error = NodeArgs { config: Some(path), ..NodeArgs::default() }.resolve().expect_err("unknown key");
        assert!(error.to_string().contains("htp"), "{error}");
        let cases = [
            NodeArgs { http: Some("nonsense".into()), ..NodeArgs::default() },
            NodeArgs { gossip: Some("127.0.0.1:0".into()), ..NodeArgs::default() },
            NodeArgs { seeds: vec!["nohost".into()], ..NodeArgs::default() },
            NodeArgs { gossip_interval_ms: Some(0), ..NodeArgs::default() },
            NodeArgs { name: Some("bad name".into()), ..NodeArgs::default() },
            NodeArgs { http: Some("0.0.0.0:8080".into()), ..NodeArgs::default() },
            NodeArgs { job_retention_secs: Some(0), ..NodeArgs::default() },
            NodeArgs { job_retention_max_jobs: Some(0), ..NodeArgs::default() },
        ];
        for args in cases {
            assert!(args.resolve().is_err());
        }
    }

    #[test]
    fn secret_file_must_exist_parse_and_not_be_world_readable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        assert!(read_secret(&path).expect_err("missing").to_string().contains("gpumesh keygen"));
        std::fs::write(&path, ClusterSecret::from_bytes([5; 32]).to_hex()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(read_secret(&path).expect_err("world readable").to_string().contains("chmod 400"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert_eq!(read_secret(&path).expect("valid"), ClusterSecret::from_bytes([5; 32]));
    }

    #[test]
    fn token_files_are_private_and_list_long_tokens() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        assert!(read_tokens(&path).expect_err("missing").to_string().contains("one token per line"));
        write("a-long-enough-client-token\n", 0o644);
        assert!(read_tokens(&path).expect_err("world readable").to_string().contains("chmod 400"));
        write("# only a comment\n\n", 0o600);
        assert!(read_tokens(&path).expect_err("empty").to_string().contains("lists no token"));
        write("short\n", 0o600);
        assert!(read_tokens(&path).expect_err("short").to_string().contains("at least 16"));
        write("# ops\n  a-long-enough-client-token  \n\nsecond-long-enough-token\n", 0o400);
        assert_eq!(read_tokens(&path).expect("valid"), ["a-long-enough-client-token", "second-long-enough-token"]);
    }

    #[test]
    fn link_tls_needs_all_three_files_and_readable_pem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str| dir.path().join(name);
        let partial = resolve_tls(Some(file("a.pem")), None, Some(file("ca.pem"))).expect_err("partial");
        assert!(partial.to_string().contains("together"), "{partial}");
        assert!(resolve_tls(None, None, None).expect("none").is_none());
        std::fs::write(file("key.pem"), "not a key").expect("write");
        std::fs::write(file("cert.pem"), "not a certificate").expect("write");
        let open =
            resolve_tls(Some(file("cert.pem")), Some(file("key.pem")), Some(file("cert.pem"))).expect_err("open");
        assert!(open.to_string().contains("chmod 400"), "a world-readable key is refused: {open}");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(file("key.pem"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let bad = resolve_tls(Some(file("cert.pem")), Some(file("key.pem")), Some(file("cert.pem"))).expect_err("bad");
        assert!(bad.to_string().contains("--cluster-tls-cert"), "{bad}");
    }
}
