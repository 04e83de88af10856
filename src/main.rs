//! The `ticketd` binary: argv → validated options → node and HTTP
//! threads → wait for SIGTERM/SIGINT → orderly stop → exit code.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{LevelFilter, error, info, warn};
use ticketd::backup::Backup;
use ticketd::cli::{self, Command, Options, Parsed};
use ticketd::http::{HttpOptions, HttpServer, Tokens};
use ticketd::node::{self, Bootstrap, DirState, Input, NodeConfig, NodeHandle};
use ticketd::notify::Notifier;
use ticketd::operate;
use ticketd::raft::Role;
use ticketd::secret::{SECRET_BYTES_MIN, Secret};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse(&args) {
        Ok(Parsed::Run(options)) => options,
        Ok(Parsed::Help) => {
            print!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("ticketd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ticketd: {e}\nTry 'ticketd --help' for more information.");
            return ExitCode::from(2);
        }
    };
    // Token files are values of flags: a bad one is a usage error.
    let tokens = match load_tokens(&options) {
        Ok(tokens) => tokens,
        Err(e) => {
            eprintln!("ticketd: {e}\nTry 'ticketd --help' for more information.");
            return ExitCode::from(2);
        }
    };
    init_logging(options.log_level);
    // A start that fails leaves no new data directory behind.
    let created = first_missing(&options.data_dir);
    let mut serving = false;
    match run(&options, tokens, &mut serving) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("ticketd: {e}");
            if let Some(dir) = created.filter(|_| !serving)
                && let Err(cleanup) = std::fs::remove_dir_all(&dir)
                && cleanup.kind() != std::io::ErrorKind::NotFound
            {
                error!(
                    "cannot remove {} after the failed start: {cleanup}",
                    dir.display()
                );
            }
            ExitCode::from(1)
        }
    }
}

/// The outermost ancestor of `dir` (or `dir` itself) that does not exist
/// yet: what a start would create.
fn first_missing(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let mut missing = None;
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing = Some(path.to_path_buf());
        at = path.parent();
    }
    missing
}

fn init_logging(level: u8) {
    let filter = match level {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Info,
        3 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    // Dated lines (RFC 3339, UTC): logs outlive the day they were written.
    let config = simplelog::ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_time_format_rfc3339()
        .build();
    // One write per line: the logger writes a record in pieces, and an
    // unbuffered stderr would let a line printed on stdout (`join`'s
    // "joined cluster ...") land inside a log line when both go to one
    // file or journal.
    let stderr = std::io::LineWriter::new(std::io::stderr());
    let _ = simplelog::WriteLogger::init(filter, config, stderr);
}

/// The HTTP address peers redirect clients to: the listen address, with
/// a wildcard host replaced by the advertised one.
fn advertised_http(options: &Options) -> String {
    match options.http_listen.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]" | "", port)) => {
            format!("{}:{port}", options.advertise)
        }
        _ => options.http_listen.clone(),
    }
}

fn load_peer_secret(options: &Options) -> Result<Option<Secret>, String> {
    let secret = operate::peer_secret(options)?;
    if secret.is_none() {
        warn!(
            "no --peer_secret: anyone who reaches the peer port {} can change the cluster",
            options.peer_listen
        );
    }
    Ok(secret)
}

fn load_tokens(options: &Options) -> Result<Tokens, String> {
    let load = |flag: &str, path: &Option<std::path::PathBuf>| {
        path.as_ref()
            .map(|p| {
                Secret::from_file(p, SECRET_BYTES_MIN).map_err(|why| format!("--{flag} {why}"))
            })
            .transpose()
    };
    Ok(Tokens {
        admin: load("admin_token", &options.admin_token)?,
        client: load("client_token", &options.client_token)?,
    })
}

/// Runs the node until it stops; `serving` turns true once it has
/// loaded its data and serves HTTP (from then on its data directory is a
/// member's and must never be removed).
fn run(options: &Options, tokens: Tokens, serving: &mut bool) -> Result<(), String> {
    let mut restore_from = None;
    let bootstrap = match &options.command {
        Command::Run => Bootstrap::Peers,
        Command::Drop => {
            return node::wipe(&options.data_dir, options.db_size_mb, true)
                .map_err(|e| e.to_string());
        }
        Command::Start => {
            node::wipe(&options.data_dir, options.db_size_mb, false).map_err(|e| e.to_string())?;
            Bootstrap::NewCluster {
                node_id: options.node_id.unwrap_or(1),
            }
        }
        Command::Restore { file, next_id } => {
            // The file is checked before the data dir is touched: a bad
            // backup leaves nothing behind.
            let (backup, state) =
                Backup::read_file(file).map_err(|e| format!("restore {}: {e}", file.display()))?;
            restore_from = Some((backup, state, *next_id));
            Bootstrap::NewCluster {
                node_id: options.node_id.unwrap_or(1),
            }
        }
        Command::Join { peer } => {
            node::wipe(&options.data_dir, options.db_size_mb, false).map_err(|e| e.to_string())?;
            operate::join(options, &advertised_http(options), peer)?
        }
        Command::Leave => match node::dir_state(&options.data_dir, options.db_size_mb)
            .map_err(|e| e.to_string())?
        {
            DirState::Running => return operate::leave_running(options, &tokens),
            DirState::Stopped { empty: true, .. } => {
                return Err(format!(
                    "nothing to leave: {} holds no node",
                    options.data_dir.display()
                ));
            }
            DirState::Stopped { removed: true, .. } => {
                info!("this node was removed from its cluster already");
                return Ok(());
            }
            // Started from its data dir to leave, then it stops.
            DirState::Stopped { .. } => Bootstrap::Peers,
        },
    };
    let leaving = options.command == Command::Leave;
    let joined = match bootstrap {
        Bootstrap::Joined {
            cluster_id,
            node_id,
            ..
        } => Some((cluster_id, node_id)),
        _ => None,
    };
    let compact_entries = std::env::var("TICKETD_COMPACT_ENTRIES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20_000);
    let config = NodeConfig {
        data_dir: options.data_dir.clone(),
        db_size_mb: options.db_size_mb,
        peers: options.peers.clone(),
        bootstrap,
        peer_addr: options.peer_addr.clone(),
        peer_listen: options.peer_listen.clone(),
        http_addr: advertised_http(options),
        expire_interval: Duration::from_millis(options.expire_ms),
        snapshot_interval: Duration::from_millis(options.snapshot_ms),
        compact_entries,
        tick: Duration::from_millis(10),
        peer_secret: load_peer_secret(options)?,
    };
    let restored = match restore_from {
        Some((backup, state, next_id)) => {
            Some(node::restore(&config, &backup, state, next_id).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let (handle, node_thread) = node::start(config).map_err(|e| e.to_string())?;
    let http_options = HttpOptions {
        id_redirect: options.redirect,
        tokens,
        connections_max: options.connections_max,
    };
    let http = match HttpServer::start(&options.http_listen, handle.clone(), http_options) {
        Ok(http) => http,
        Err(e) => {
            handle.shutdown();
            let _ = node_thread.join();
            return Err(e);
        }
    };
    info!("serving HTTP on {}", http.local_addr);
    let leave_by = if leaving {
        if let Err(e) = handle.call(|reply| Input::Leave { reply }, Duration::from_secs(5)) {
            http.shutdown();
            handle.shutdown();
            let _ = node_thread.join();
            return Err(format!("cannot leave: {e}"));
        }
        Some(Instant::now() + operate::LEAVE_WAIT)
    } else {
        None
    };
    if let Some((cluster_id, node_id)) = joined {
        // The one line an operator's script reads.
        println!("joined cluster {cluster_id:016x} as node {node_id}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        info!("joined cluster {cluster_id:016x} as node {node_id}");
    }
    if let Some(restored) = restored {
        println!(
            "restored as node {} of new cluster {:016x}; IDs start at {}",
            restored.node_id, restored.cluster_id, restored.ids_next
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
    // systemd (Type=notify): ready once the data is loaded and HTTP is
    // served; a status line on every change of role or leader.
    *serving = true;
    let notifier = Notifier::from_env();
    let mut shown = String::new();
    let mut ready = false;
    while !stop.load(Ordering::SeqCst) && !node_thread.is_finished() {
        if leave_by.is_some_and(|by| Instant::now() >= by) {
            error!("not removed within {:?}; stopping", operate::LEAVE_WAIT);
            break;
        }
        let line = status_line(&handle);
        if line != shown || !ready {
            let prefix = if ready { "" } else { "READY=1\n" };
            notifier.send(&format!("{prefix}STATUS={line}"));
            shown = line;
            ready = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    notifier.send("STOPPING=1\nSTATUS=stopping");
    info!("shutting down");
    http.shutdown();
    handle.shutdown();
    node_thread
        .join()
        .map_err(|_| "the node thread panicked".to_string())?;
    // A node refused by its cluster (its data is gone) stops with an error.
    match handle.shared.fatal() {
        Some(why) => Err(why),
        None if leaving && !handle.shared.status().removed => {
            Err("the node stopped before its removal was committed".into())
        }
        None => Ok(()),
    }
}

/// What `systemctl status` shows: this node's role and who leads.
fn status_line(handle: &NodeHandle) -> String {
    let status = handle.shared.status();
    match (status.role, status.leader) {
        (Role::Leader, _) => format!("leader of term {}", status.term),
        (_, 0) => format!(
            "{} in term {}, no leader known",
            status.role.as_str(),
            status.term
        ),
        (role, leader) => format!(
            "{} in term {}, leader is node {leader}",
            role.as_str(),
            status.term
        ),
    }
}
