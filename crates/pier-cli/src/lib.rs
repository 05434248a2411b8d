//! The `pier` command line: clap definitions, and the client side of each command, which
//! calls the daemon and prints a table (or JSON with `--format json`). The CLI holds no
//! state of its own.

mod build;
mod cluster;
mod completion;
mod containers;
mod containers_fs;
pub mod daemon_config;
mod images;
mod inspect_view;
mod login;
mod networks;
pub(crate) mod output;
mod progress;
mod registry;
mod run_opts;
mod shortcuts;
mod system;
pub mod template;
mod update;
mod volumes;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use pier_client::Client;

pub use output::{die_of_sigpipe, Format};

/// Pier: a private cloud in one binary.
#[derive(Debug, Parser)]
#[command(name = "pier", version, about, propagate_version = true)]
pub struct Cli {
    /// The daemon's socket: a path or `unix:///path`. DOCKER_HOST is not read (it
    /// names Docker's daemon, or Pier's Docker API socket for the docker CLI).
    #[arg(
        long,
        short = 'H',
        global = true,
        env = "PIER_HOST",
        default_value = "/run/pier/pier.sock",
        value_parser = parse_host
    )]
    pub host: PathBuf,
    /// Output format: `table`, `json` (errors too, on stderr), or a Go template with
    /// Docker's field names: `{{.Names}}`, `{{json .}}`, `table {{.ID}}\t{{.Status}}`.
    #[arg(long, global = true, default_value = "table", value_parser = output::parse_format)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Connect to the serial console of a running VM (ctrl-] leaves it).
    Console { vm: String },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine.
    Daemon(DaemonArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Manage containers (the other container commands are top-level, as in Docker).
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Manage the built-in registry.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// VMs (`pier run --vm`): their serial console.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Pull an image from a registry.
    Pull(registry::TransferArgs),
    /// Push an image to a registry.
    Push(registry::TransferArgs),
    /// Show or set a project's volume quotas.
    Quota {
        /// Bytes the project's volumes may commit (e.g. 10g); `none` clears it.
        #[arg(long)]
        volume_bytes: Option<String>,
        /// How many volumes the project may have; `none` clears it.
        #[arg(long)]
        volumes: Option<String>,
    },
    /// List a container's published ports.
    Port { container: String },
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// List images (same as `pier image ls`).
    Images(images::ListArgs),
    /// Remove images (same as `pier image rm`).
    Rmi(images::RemoveArgs),
    /// Show what the daemon is and holds.
    Info,
    /// Create and start a container.
    Run(containers::RunArgs),
    /// Create a container.
    Create(containers::CreateArgs),
    /// Start containers.
    Start {
        /// Attach to the container's output (and exit with its exit code); one container.
        #[arg(short, long)]
        attach: bool,
        /// Attach to the container's input too (implies --attach).
        #[arg(short, long)]
        interactive: bool,
        /// The keys that detach from an attached terminal, leaving the container running
        /// (ctrl-p,ctrl-q).
        #[arg(long)]
        detach_keys: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers: their stop signal, then SIGKILL after a grace period.
    Stop {
        /// Seconds to wait before killing.
        #[arg(short, long)]
        time: Option<u64>,
        /// Signal to send first.
        #[arg(short, long)]
        signal: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart {
        #[arg(short, long)]
        time: Option<u64>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers.
    Kill {
        #[arg(short, long)]
        signal: Option<String>,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        /// Remove their anonymous volumes too.
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    #[command(alias = "ls")]
    Ps(containers::PsArgs),
    /// Show containers (or images) in detail.
    Inspect {
        /// A Go template with Docker's field paths (`{{.State.Status}}`); same as --format.
        #[arg(short = 'f', value_name = "FORMAT", value_parser = output::parse_format)]
        template: Option<Format>,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Freeze containers.
    Pause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw containers.
    Unpause {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container.
    Rename { container: String, new_name: String },
    /// Stream events: with --since, the kept ones from then first; until --until.
    Events(system::EventsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Attach to a running container's input and output.
    Attach {
        /// Do not pass local input to the container.
        #[arg(long)]
        no_stdin: bool,
        /// Pass the signals this client receives on to the container (without a terminal).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        sig_proxy: bool,
        /// The keys that detach from the container, leaving it running (ctrl-p,ctrl-q).
        #[arg(long)]
        detach_keys: Option<String>,
        container: String,
    },
    /// Show what changed in a container's filesystem.
    Diff { container: String },
    /// Write a container's filesystem as a tar.
    Export {
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
        container: String,
    },
    /// Make an image from a container's changes.
    Commit {
        #[arg(short, long, default_value = "")]
        message: String,
        #[arg(short, long, default_value = "")]
        author: String,
        /// A Dockerfile instruction for the image's config (CMD, ENTRYPOINT, ENV, EXPOSE,
        /// HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable.
        #[arg(short, long = "change")]
        change: Vec<String>,
        container: String,
        reference: Option<String>,
    },
    /// Copy files between a container and the host: CONTAINER:PATH HOSTPATH or the reverse.
    Cp { src: String, dst: String },
    /// Show the processes of a container.
    Top { container: String },
    /// Show containers' resource usage.
    Stats(containers::StatsArgs),
    /// Print the native API's OpenAPI document.
    #[command(hide = true)]
    Openapi,
    /// Manage the daemon: disk usage, prune, info.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Show the client's and the daemon's versions.
    Version,
    /// The pool of hosts: make one, join one, make join tokens.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The pool's hosts: list, inspect, cordon, uncordon, drain, evacuate, remove.
    #[command(subcommand)]
    Host(cluster::HostCommand),
    /// The web dashboard (`pier daemon --dashboard ADDR`).
    #[command(subcommand)]
    Dashboard(system::DashboardCommand),
    /// Log in to a registry: check the credentials, then keep them for pull and push.
    Login(login::LoginArgs),
    /// Forget the credentials of a registry.
    Logout(login::LogoutArgs),
    /// Save images to an archive (same as `pier image save`).
    Save(shortcuts::SaveArgs),
    /// Load images from an archive (same as `pier image load`).
    Load(shortcuts::LoadArgs),
    /// Give an image another name (same as `pier image tag`).
    Tag(shortcuts::TagArgs),
    /// Show the steps that made an image (same as `pier image history`).
    History(shortcuts::HistoryArgs),
    /// Find repositories in the built-in registry.
    Search(system::SearchArgs),
    /// Change the resource limits or restart policy of containers.
    Update(update::UpdateArgs),
    /// Print a shell completion script: `pier completion bash > /usr/share/bash-completion/completions/pier`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (pier.1, pier-run.1, ...) into a directory.
    Man { dir: PathBuf },
}

/// `--host`: a socket path, or `unix://` and one; other schemes are refused, since the
/// daemon serves only its Unix socket.
pub(crate) fn parse_host(s: &str) -> Result<PathBuf, String> {
    if let Some(p) = s.strip_prefix("unix://") {
        if p.is_empty() {
            return Err("unix:// needs a socket path, e.g. unix:///run/pier/pier.sock".into());
        }
        return Ok(PathBuf::from(p));
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(format!(
            "{scheme}:// is not supported: the daemon serves its API only on a Unix socket (a \
             remote TCP/TLS API does not exist yet; no issue brings it so far). Give the \
             socket as a path or unix:///path, or run pier on the daemon's host (ssh -L \
             /tmp/pier.sock:/run/pier/pier.sock HOST forwards the socket)"
        ));
    }
    if s.is_empty() {
        return Err("the socket path is empty".into());
    }
    Ok(PathBuf::from(s))
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers (same as `pier ps`).
    #[command(alias = "list", alias = "ps")]
    Ls(containers::PsArgs),
    /// Remove every container that is not running.
    Prune {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// The configuration file: every flag below under its long name (a flag given here
    /// wins over the file). Default: /etc/pier/daemon.toml when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// State directory.
    #[arg(long, default_value = "/var/lib/pier")]
    pub root: PathBuf,
    /// Socket of the native API (overrides --host for the daemon).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Socket of the Docker Engine API (`DOCKER_HOST=unix://PATH docker ...`); an empty
    /// value turns it off. Default: `docker.sock` next to the native socket when that is
    /// given, else /run/pier/docker.sock.
    #[arg(long, value_parser = clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from))]
    pub docker_socket: Option<PathBuf>,
    /// Log filter, e.g. `info` or `pier_image=debug`.
    #[arg(long, env = "PIER_LOG", default_value = "info")]
    pub log_level: String,
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Also serve `/metrics` (Prometheus) on this TCP address, e.g. 127.0.0.1:9323; the
    /// native socket always serves it.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Set the kernel's cgroup `favordynmods` option (host-wide), which makes moving a
    /// container into its cgroup about 15 ms faster.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cgroup_favordynmods: bool,
    /// Serve the built-in OCI registry on this address (e.g. 127.0.0.1:5000).
    #[arg(long)]
    pub registry_addr: Option<std::net::SocketAddr>,
    /// A registry (`host[:port]`) to reach over plain HTTP; repeatable. Loopback
    /// registries always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// A registry (`host[:port]`) `pull` tries before an image's own; repeatable, in order.
    #[arg(long = "registry-mirror")]
    pub registry_mirrors: Vec<String>,
    /// A root certificate (PEM) to trust for registries besides the system's; repeatable.
    #[arg(long = "registry-ca")]
    pub registry_ca_files: Vec<PathBuf>,
    /// Make the built-in registry a pull-through mirror of this registry (`host[:port]`).
    #[arg(long)]
    pub registry_upstream: Option<String>,
    /// The registry's users and policy, a JSON file: `{"anonymous_pull": bool,
    /// "users": {"NAME": {"password": "HASH", "pull": ["repo", "team/*", "*"], "push": [...]}}}`;
    /// HASH from `pier registry hash-password` (argon2) or `htpasswd -nB` (bcrypt).
    #[arg(long)]
    pub registry_auth: Option<PathBuf>,
    /// Serve the registry over TLS with this certificate chain (PEM); needs --registry-tls-key.
    #[arg(long, requires = "registry_tls_key")]
    pub registry_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --registry-tls-cert.
    #[arg(long, requires = "registry_tls_cert")]
    pub registry_tls_key: Option<PathBuf>,
    /// Where the VMs' kernel, modules and guest agent are (`scripts/vm-assets.sh`
    /// installs them). Default: /usr/local/lib/pier/vm, or $PIER_VM_DIR.
    #[arg(long, env = "PIER_VM_DIR")]
    pub vm_dir: Option<PathBuf>,
    /// How VMs run: `kvm`, `tcg` (emulation), or `auto` (KVM when /dev/kvm works on a
    /// host that is not itself a VM, where nested KVM is often slower than emulation).
    #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    pub vm_accel: String,
    /// Seconds between the samples of the metrics history (`GET /v1/metrics/history`,
    /// which keeps 240 of them: an hour at the default).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub metrics_history_period: u64,
    /// Serve the web dashboard over HTTPS on this address, e.g. 127.0.0.1:9443; log in
    /// with the link `pier dashboard url` prints.
    #[arg(long)]
    pub dashboard: Option<std::net::SocketAddr>,
    /// The dashboard's certificate chain (PEM). Default: a self-signed one, made once
    /// and kept in ROOT/dashboard/.
    #[arg(long, requires_all = ["dashboard", "dashboard_key"])]
    pub dashboard_cert: Option<PathBuf>,
    /// The private key (PEM) of --dashboard-cert.
    #[arg(long, requires_all = ["dashboard", "dashboard_cert"])]
    pub dashboard_key: Option<PathBuf>,
    /// How long a pool member's heartbeat lives without renewal (`5s`, `1m`; whole
    /// seconds, at least 2): a member silent that long shows `down` in `pier host ls`.
    #[arg(long, default_value = "5s", value_parser = parse_heartbeat)]
    pub host_heartbeat: std::time::Duration,
    /// How long a pool member's heartbeat is gone before one member (the holder of the
    /// pool's failover lease) moves its instances with a restart policy to other hosts
    /// (`30s`, `2m`; whole seconds, at least 2), or `off`.
    #[arg(long, default_value = "30s", value_parser = parse_down_after)]
    pub host_down_after: std::option::Option<std::time::Duration>,
    /// Seconds an API client has to send a request's headers before the daemon closes
    /// its connection (hidden: tests shorten it).
    #[arg(long, hide = true, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
}

/// `--host-heartbeat`: whole seconds, `N`, `Ns` or `Nm`, from 2 s (etcd's leases are whole
/// seconds, with a floor of their own) to an hour.
fn parse_heartbeat(s: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!("{s:?} is not a heartbeat time: give whole seconds from 2s to 1h, e.g. 5s or 1m")
    };
    let (n, unit) = match s.strip_suffix('m') {
        Some(n) => (n, 60),
        None => (s.strip_suffix('s').unwrap_or(s), 1),
    };
    let secs = n
        .parse::<u64>()
        .map_err(|_| bad())?
        .checked_mul(unit)
        .ok_or_else(bad)?;
    if !(2..=3600).contains(&secs) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// `--host-down-after`: as `--host-heartbeat`, or `off`.
fn parse_down_after(s: &str) -> Result<Option<std::time::Duration>, String> {
    if s == "off" {
        return Ok(None);
    }
    parse_heartbeat(s).map(Some).map_err(|_| {
        format!("{s:?} is not a time: give whole seconds from 2s to 1h (e.g. 30s or 2m), or off")
    })
}

/// Why the CLI stopped; carries the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl From<pier_client::ClientError> for CliError {
    fn from(e: pier_client::ClientError) -> Self {
        CliError {
            code: 1,
            message: e.to_string(),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError {
            code: 1,
            message: e.to_string(),
        }
    }
}

pub fn fail(message: impl Into<String>) -> CliError {
    CliError {
        code: 1,
        message: message.into(),
    }
}

/// Docker's exit code for errors before a container started (`run`, `create`).
pub const EXIT_ENGINE: i32 = 125;

/// Parses the command line. A usage error exits as Docker's CLI does, 125 whatever the
/// command (`docker ps --bogus` too); `--help` and `--version` exit 0.
pub fn parse() -> Cli {
    if std::env::args_os().len() == 1 {
        // `pier` alone: its help, exit 0, as `docker` alone (whatever PIER_HOST says).
        let help = Cli::command().render_help().to_string();
        output::outln(help.trim_end());
        std::process::exit(0);
    }
    match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => EXIT_ENGINE,
            };
            if code != 0 && json_requested() {
                // The first line of clap's message, as a JSON error like any other.
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or("invalid usage");
                let message = first.strip_prefix("error: ").unwrap_or(first).to_string();
                report_error(Format::Json, &CliError { code, message });
            } else if let Err(w) = e.print() {
                if output::is_broken_pipe(&w) {
                    output::die_of_sigpipe();
                }
            }
            std::process::exit(code)
        }
    }
}

/// Whether the raw arguments ask for `--format json` (for errors before they parse).
fn json_requested() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--format" && w[1] == "json")
}

/// Prints why a command failed on stderr: `Error: ...`, or with `--format json` one line
/// `{"error": "...", "code": N}` (N the exit code). An empty message (a container's own
/// exit code) prints nothing. Returns the exit code.
pub fn report_error(fmt: Format, e: &CliError) -> i32 {
    use std::io::Write;
    if !e.message.is_empty() {
        let line = match fmt {
            Format::Json => serde_json::json!({"error": e.message, "code": e.code}).to_string(),
            _ => format!("Error: {}", e.message),
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    e.code
}

/// The one place that decides a command's exit code: 0 on success; for `run` and
/// `create`, 125 for every error before the container started (the CLI's checks, the
/// daemon's refusals, a missing image, an unreachable daemon), 126/127 when its command
/// could not be invoked or found, else the container's own code; 1 for other commands'
/// errors (or the code the command chose, e.g. `exec`'s).
pub(crate) fn exit_code(starts_container: bool, e: CliError) -> CliError {
    let before_start = !e.message.is_empty() && !(125..=127).contains(&e.code);
    if starts_container && before_start {
        return CliError {
            code: EXIT_ENGINE,
            ..e
        };
    }
    e
}

/// Runs a client command (everything but `daemon`).
pub async fn run_client(cli: Cli) -> Result<(), CliError> {
    output::set_format(cli.format);
    output::set_id_header(match &cli.command {
        Command::Images(_) | Command::Image(_) => "IMAGE ID",
        Command::Network(_) => "NETWORK ID",
        Command::Volume(_) => "VOLUME NAME",
        _ => "CONTAINER ID",
    });
    let starts_container = matches!(cli.command, Command::Run(_) | Command::Create(_));
    dispatch(cli)
        .await
        .map_err(|e| exit_code(starts_container, e))
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let client = Client::new(&cli.host);
    let fmt = cli.format;
    match cli.command {
        Command::Daemon(_) | Command::Openapi => unreachable!("handled by main"),
        Command::Completion { shell } => completion::completion(shell, &mut Cli::command()),
        Command::Man { dir } => completion::man(Cli::command(), &dir),
        Command::Image(cmd) => images::run(&client, fmt, cmd).await,
        Command::Container(ContainerCommand::Prune { force }) => {
            if !output::confirm(force, "This will remove all stopped containers.") {
                return Ok(());
            }
            let deleted: Vec<String> = client.post("/v1/containers/prune", &()).await?;
            output::print(fmt, &deleted, || {
                let mut lines = vec!["Deleted Containers:".to_string()];
                lines.extend(deleted.iter().cloned());
                lines.push(format!("Total: {}", deleted.len()));
                lines.join("\n")
            })
        }
        Command::Network(cmd) => networks::run(&client, fmt, cmd).await,
        Command::Volume(cmd) => volumes::run(&client, fmt, cmd).await,
        Command::Registry(cmd) => registry::run(&client, fmt, cmd).await,
        Command::Pull(a) => registry::pull(&client, fmt, a).await,
        Command::Push(a) => registry::push(&client, fmt, a).await,
        Command::Quota {
            volume_bytes,
            volumes,
        } => volumes::quota(&client, fmt, volume_bytes, volumes).await,
        Command::Port { container } => networks::port(&client, &container).await,
        Command::Images(args) => images::list(&client, fmt, args).await,
        Command::Build(a) => build::build(&client, a).await,
        Command::Rmi(args) => images::remove(&client, fmt, args).await,
        Command::Run(a) => containers::run(&client, fmt, a).await,
        Command::Create(a) => containers::create(&client, fmt, a).await,
        Command::Start {
            attach,
            interactive,
            detach_keys,
            containers: c,
        } => {
            if attach || interactive {
                let [name] = c.as_slice() else {
                    return Err(fail(
                        "you cannot start and attach multiple containers at once",
                    ));
                };
                containers::start_attach(&client, name, interactive, detach_keys).await
            } else {
                containers::start(&client, &c).await
            }
        }
        Command::Stop {
            time,
            signal,
            containers: c,
        } => containers::stop(&client, &c, time, signal, false).await,
        Command::Restart {
            time,
            containers: c,
        } => containers::stop(&client, &c, time, None, true).await,
        Command::Kill {
            signal,
            containers: c,
        } => containers::kill(&client, &c, signal).await,
        Command::Rm {
            force,
            volumes,
            containers: c,
        } => containers::rm(&client, &c, force, volumes).await,
        Command::Ps(a) => containers::ps(&client, fmt, a).await,
        Command::Inspect { template, names } => {
            containers::inspect(&client, template.unwrap_or(fmt), &names).await
        }
        Command::Logs(a) => containers::logs(&client, a).await,
        Command::Wait { containers: c } => containers::wait(&client, &c).await,
        Command::Pause { containers: c } => containers::pause(&client, &c, true).await,
        Command::Unpause { containers: c } => containers::pause(&client, &c, false).await,
        Command::Rename {
            container,
            new_name,
        } => containers::rename(&client, &container, &new_name).await,
        Command::Events(a) => system::events(&client, fmt, a).await,
        Command::Exec(a) => containers::exec(&client, a).await,
        Command::Attach {
            no_stdin,
            sig_proxy,
            detach_keys,
            container,
        } => containers::attach(&client, &container, no_stdin, sig_proxy, detach_keys).await,
        Command::Diff { container } => containers_fs::diff(&client, fmt, &container).await,
        Command::Export { output, container } => {
            containers_fs::export(&client, &container, output).await
        }
        Command::Commit {
            message,
            author,
            change,
            container,
            reference,
        } => {
            containers_fs::commit(&client, fmt, &container, reference, message, author, change)
                .await
        }
        Command::Cp { src, dst } => containers_fs::cp(&client, &src, &dst).await,
        Command::Top { container } => containers::top(&client, fmt, &container).await,
        Command::Stats(a) => containers::stats(&client, fmt, a).await,
        Command::Info => system::info(&client, fmt).await,
        Command::Vm(VmCommand::Console { vm }) => containers::console(&client, &vm).await,
        Command::System(cmd) => system::run(&client, fmt, cmd).await,
        Command::Version => system::version(&client, fmt).await,
        Command::Dashboard(system::DashboardCommand::Url) => {
            system::dashboard_url(&client, fmt).await
        }
        Command::Cluster(cmd) => cluster::cluster(&client, fmt, cmd).await,
        Command::Host(cmd) => cluster::host(&client, fmt, cmd).await,
        Command::Login(a) => login::login(&client, a).await,
        Command::Logout(a) => login::logout(a),
        Command::Save(a) => images::run(&client, fmt, a.into()).await,
        Command::Load(a) => images::run(&client, fmt, a.into()).await,
        Command::Tag(a) => images::run(&client, fmt, a.into()).await,
        Command::History(a) => images::run(&client, fmt, a.into()).await,
        Command::Search(a) => system::search(&client, fmt, a).await,
        Command::Update(a) => update::update(&client, fmt, a).await,
        Command::Container(ContainerCommand::Ls(a)) => containers::ps(&client, fmt, a).await,
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SaveFormat {
    DockerArchive,
    OciArchive,
}
