//! `pier`: one binary for the daemon, the CLI, and the runtime's re-exec'd helpers
//! (`__monitor`, `__monitor-zygote`, `__exec`, and a VM's `__vm` and `__vm-exec`). Dispatch
//! happens before any tokio runtime exists, so a helper
//! that must be single-threaded never inherits threads.

use pier_cli::{Cli, Command};

fn main() {
    // The helpers must stay single-threaded and light: dispatch them before anything else.
    let args: Vec<std::ffi::OsString> = std::env::args_os().take(4).collect();
    // The container's directory: given, or the working directory (how the daemon starts
    // the monitor, so that no host path shows in its command line).
    let dir = || match args.get(2) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::current_dir().unwrap_or_default(),
    };
    match args.get(1).and_then(|a| a.to_str()) {
        Some(pier_runtime::monitor::ARG) => std::process::exit(pier_runtime::monitor::main(&dir())),
        Some(pier_runtime::zygote::ARG) => std::process::exit(pier_runtime::zygote::main()),
        Some(pier_runtime::vm_start::HELPER_ARG) => {
            std::process::exit(pier_vm::helper::main(&dir()))
        }
        Some(pier_runtime::vm_start::EXEC_ARG) => {
            let request = args.get(3).and_then(|a| a.to_str()).unwrap_or("");
            std::process::exit(pier_vm::exec::main(&dir(), request))
        }
        Some("__exec") => {
            let request = args.get(3).and_then(|a| a.to_str()).unwrap_or("");
            std::process::exit(pier_runtime::exec::main(&dir(), request))
        }
        _ => {}
    }
    // `println!` panics on a closed stdout; any such write left ends the process as a
    // Unix tool ends on SIGPIPE instead of printing a panic (`pier ... | head`).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            pier_cli::die_of_sigpipe();
        }
        default_hook(info)
    }));
    let cli = pier_cli::parse();
    let code = match cli.command {
        Command::Openapi => {
            print!("{}", pier_daemon::api::openapi_json());
            0
        }
        Command::Daemon(ref args) => run_daemon(&cli, args),
        _ => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let fmt = cli.format;
            let code = match rt.block_on(pier_cli::run_client(cli)) {
                Ok(()) => 0,
                Err(e) => pier_cli::report_error(fmt, &e),
            };
            // Exit before the runtime drops: a thread blocked reading stdin (attach)
            // would hold the drop forever.
            std::process::exit(code)
        }
    };
    std::process::exit(code);
}

fn run_daemon(cli: &Cli, args: &pier_cli::DaemonArgs) -> i32 {
    // The configuration file, under the flags given on the command line.
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let args = match matches.subcommand() {
        Some(("daemon", m)) => match pier_cli::daemon_config::apply(args, m) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("Error: {e}");
                return 1;
            }
        },
        _ => unreachable!("run_daemon runs for `pier daemon`"),
    };
    let args = &args;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(pier_cli::daemon_config::log_filter(
                &args.log_level,
            ))
            .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        logs.json().flatten_event(true).init();
    } else {
        // Colour codes only where a person reads them, never in a log file.
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let socket = args.socket.clone().unwrap_or_else(|| cli.host.clone());
    // The Docker socket goes next to a native socket given explicitly, so daemons side by
    // side do not share one.
    let docker_socket = match &args.docker_socket {
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(p.clone()),
        None if socket.as_path() != std::path::Path::new(pier_daemon::server::DEFAULT_SOCKET) => {
            Some(socket.with_file_name("docker.sock"))
        }
        None => Some(pier_daemon::server::DEFAULT_DOCKER_SOCKET.into()),
    };
    let config = pier_daemon::DaemonConfig {
        root: args.root.clone(),
        socket,
        docker_socket,
        cgroup_favordynmods: args.cgroup_favordynmods,
        registry_addr: args.registry_addr,
        insecure_registries: args.insecure_registries.clone(),
        registry_mirrors: args.registry_mirrors.clone(),
        registry_ca_files: args.registry_ca_files.clone(),
        registry_upstream: args.registry_upstream.clone(),
        registry_auth: args.registry_auth.clone(),
        registry_tls: args
            .registry_tls_cert
            .clone()
            .zip(args.registry_tls_key.clone()),
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
        metrics_addr: args.metrics_addr,
        metrics_history_period: std::time::Duration::from_secs(args.metrics_history_period),
        dashboard_addr: args.dashboard,
        dashboard_tls: args.dashboard_cert.clone().zip(args.dashboard_key.clone()),
        host_heartbeat: args.host_heartbeat,
        host_down_after: args.host_down_after,
        vm: pier_daemon::VmSettings {
            assets: args
                .vm_dir
                .clone()
                .unwrap_or_else(pier_vm::assets::Assets::default_dir),
            accel: args.vm_accel.parse().unwrap_or_default(),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(pier_daemon::run(config)) {
        Ok(()) => 0,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("Error: {msg}");
            1
        }
    }
}
