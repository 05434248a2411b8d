//! The `pier` command line: clap definitions, and the client side of each command, which
//! calls the daemon and prints a table (or JSON with `--format json`). The CLI holds no
//! state of its own.

mod build;
mod containers;
mod containers_fs;
mod images;
mod networks;
mod output;
mod registry;
mod run_opts;
mod volumes;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pier_client::Client;

pub use output::Format;

/// Pier: a private cloud in one binary.
#[derive(Debug, Parser)]
#[command(name = "pier", version, about, propagate_version = true)]
pub struct Cli {
    /// The daemon's socket.
    #[arg(
        long,
        short = 'H',
        global = true,
        env = "PIER_HOST",
        default_value = "/run/pier/pier.sock"
    )]
    pub host: PathBuf,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
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
    /// Stream lifecycle events.
    Events,
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
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Remove every container that is not running.
    Prune {
        /// Do not ask for confirmation (prune never asks; accepted for Docker habits).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
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
    /// Seconds an API client has to send a request's headers before the daemon closes
    /// its connection (hidden: tests shorten it).
    #[arg(long, hide = true, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
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

/// Runs a client command (everything but `daemon`).
pub async fn run_client(cli: Cli) -> Result<(), CliError> {
    let client = Client::new(&cli.host);
    let fmt = cli.format;
    match cli.command {
        Command::Daemon(_) | Command::Openapi => unreachable!("handled by main"),
        Command::Image(cmd) => images::run(&client, fmt, cmd).await,
        Command::Container(ContainerCommand::Prune { force: _ }) => {
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
        Command::Start { containers: c } => containers::start(&client, &c).await,
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
        Command::Inspect { names } => containers::inspect(&client, &names).await,
        Command::Logs(a) => containers::logs(&client, a).await,
        Command::Wait { containers: c } => containers::wait(&client, &c).await,
        Command::Pause { containers: c } => containers::pause(&client, &c, true).await,
        Command::Unpause { containers: c } => containers::pause(&client, &c, false).await,
        Command::Rename {
            container,
            new_name,
        } => containers::rename(&client, &container, &new_name).await,
        Command::Events => containers::events(&client, fmt).await,
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
            container,
            reference,
        } => containers_fs::commit(&client, fmt, &container, reference, message, author).await,
        Command::Cp { src, dst } => containers_fs::cp(&client, &src, &dst).await,
        Command::Top { container } => containers::top(&client, fmt, &container).await,
        Command::Stats(a) => containers::stats(&client, fmt, a).await,
        Command::Info => {
            let info = client.info().await?;
            output::print(fmt, &info, || {
                [
                    format!("Version:         {}", info.version),
                    format!("API version:     {}", info.api_version),
                    format!("Root:            {}", info.root),
                    format!("Store schema:    {}", info.store_schema),
                    format!("Storage driver:  {}", info.storage_driver),
                    format!("Images:          {}", info.images),
                    format!("Kernel:          {}", info.kernel),
                ]
                .join("\n")
            })
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SaveFormat {
    DockerArchive,
    OciArchive,
}
