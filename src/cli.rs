//! The command line: getopts parsing of `argv` into a validated [`Options`]
//! (SPEC "Command line"). Pure: it reads only its arguments, touches no
//! file, socket or environment variable, and never exits; `main` prints
//! the usage and picks the exit status.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PEER_PORT: u16 = 9001;
const DEFAULT_HTTP_PORT: u16 = 8001;
const DEFAULT_DATA_ROOT: &str = "ticketd-data";
const DEFAULT_DB_SIZE_MB: u64 = 1024;
const DEFAULT_EXPIRE_MS: u64 = 500;
const DEFAULT_SNAPSHOT_MS: u64 = 1000;
const DEFAULT_LOG_LEVEL: u8 = 2;
const DEFAULT_CONNECTIONS_MAX: u64 = 4096;

/// LMDB map limit: 1 TiB.
pub const DB_SIZE_MB_MAX: u64 = 1 << 20;
/// An hour: any longer interval is a typo, and keeps `Duration` math small.
pub const INTERVAL_MS_MAX: u64 = 3_600_000;
pub const LOG_LEVEL_MAX: u8 = 4;
/// `--max_connections`: each connection holds a thread and two
/// descriptors; more than this is a typo.
pub const CONNECTIONS_MAX_MAX: u64 = 1 << 20;
/// Clusters are 1, 3 or 5 nodes; this only bounds a runaway list.
pub const PEERS_MAX: usize = 16;
/// The largest `--id`: ids above 2^62 leave room for every later one.
const NODE_ID_MAX: u64 = 1 << 62;
/// The longest DNS name.
const HOST_LEN_MAX: usize = 253;

/// turbosquid's Go-style single-dash long flags, accepted as `--name`.
const GO_STYLE_FLAGS: [&str; 4] = ["snappath", "expire", "snapshot", "loglevel"];

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run a node; bootstrap from `PEERS` (or as a one-node cluster) if the
    /// data directory is empty.
    Run,
    /// Wipe the data directory and start a new one-node cluster.
    Start,
    /// Wipe the data directory and join the cluster `peer` belongs to.
    Join { peer: String },
    /// Ask the cluster to remove this node, then stop.
    Leave,
    /// Wipe the data directory (refused while a node runs on it).
    Drop,
    /// Make a new one-node cluster in an empty data directory from the
    /// backup in `file`, serving IDs from `max(next_id, the backup's
    /// high-water mark + 1)` on, then run it.
    Restore { file: PathBuf, next_id: u64 },
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub command: Command,
    /// The initial members' peer addresses (`host:port`, no duplicates,
    /// ours among them); empty when not given.
    pub peers: Vec<String>,
    /// Where to bind (may be a wildcard such as `0.0.0.0`).
    pub host: String,
    /// The host peers and redirected clients use to reach this node:
    /// `--advertise`, else `--host`.
    pub advertise: String,
    pub peer_port: u16,
    pub http_port: u16,
    /// `--id N`: this node's id when it starts or joins (None: assigned).
    pub node_id: Option<u64>,
    /// `host:port` for the HTTP listener: `-l`, or `host` + `http_port`.
    pub http_listen: String,
    /// `advertise:peer_port`, as peers know us.
    pub peer_addr: String,
    /// `host:peer_port`: where the peer listener binds.
    pub peer_listen: String,
    pub data_dir: PathBuf,
    pub db_size_mb: u64,
    pub expire_ms: u64,
    pub snapshot_ms: u64,
    /// 0 silent, 1 errors, 2 info, 3 debug, 4 trace.
    pub log_level: u8,
    /// Status of a follower's redirect for `POST /`: 301, 307 or 308.
    pub redirect: u16,
    /// Files holding the bearer tokens for admin and client calls.
    pub admin_token: Option<PathBuf>,
    pub client_token: Option<PathBuf>,
    /// `--peer_secret`: the file with the secret peers prove.
    pub peer_secret: Option<PathBuf>,
    /// `--max_connections`: HTTP connections served at once.
    pub connections_max: usize,
}

/// The outcome of a successful parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Run(Box<Options>),
    Help,
    Version,
}

/// Why the command line was refused: a one-line reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn options() -> getopts::Options {
    let mut opts = getopts::Options::new();
    opts.optopt("", "peer_port", "Raft peer traffic (default 9001)", "PORT")
        .optopt("", "raft_port", "alias of --peer_port", "PORT")
        .optopt(
            "",
            "id",
            "this node's id when it starts or joins (never one used before; default assigned)",
            "N",
        )
        .optopt(
            "",
            "http_port",
            "client HTTP traffic (default 8001)",
            "PORT",
        )
        .optopt(
            "H",
            "host",
            "address to bind (default 127.0.0.1; 0.0.0.0 needs --advertise)",
            "HOST",
        )
        .optopt(
            "",
            "advertise",
            "address peers and redirected clients use to reach this node (default --host)",
            "HOST",
        )
        .optopt(
            "l",
            "",
            "HTTP listen address, overrides --host/--http_port for HTTP",
            "HOST:PORT",
        )
        .optopt(
            "P",
            "path",
            "data directory (default ticketd-data/<peer_port>)",
            "DIR",
        )
        .optopt("", "snappath", "alias of --path", "DIR")
        .optopt("s", "db_size", "LMDB map size (default 1024)", "MB")
        .optopt(
            "",
            "expire",
            "how often the leader checks sessions for expiry (default 500)",
            "MS",
        )
        .optopt(
            "",
            "snapshot",
            "how often to consider compacting the log (default 1000)",
            "MS",
        )
        .optopt(
            "",
            "loglevel",
            "0 silent, 1 errors, 2 info, 3 debug, 4 trace (default 2)",
            "N",
        )
        .optopt(
            "",
            "redirect",
            "a follower's redirect for POST /: 301 (default), 307 or 308 (clients that turn a POST into a GET on 301)",
            "CODE",
        )
        .optopt(
            "",
            "peer_secret",
            "file with the secret (>= 32 bytes; two lines while rotating) every peer connection must prove (default: none, with a warning)",
            "FILE",
        )
        .optopt(
            "",
            "admin_token",
            "file with the bearer token for membership changes, transfer and dumps (default: those only from loopback clients)",
            "FILE",
        )
        .optopt(
            "",
            "client_token",
            "file with the bearer token every other request needs but /healthz and /readyz (default: open)",
            "FILE",
        )
        .optopt(
            "",
            "max_connections",
            "HTTP connections served at once; more get 503 and are closed (default 4096)",
            "N",
        )
        .optopt(
            "",
            "next-id",
            "restore: the smallest ID the restored cluster may serve (more than the old cluster's largest ticketd_ids_reserved_max)",
            "N",
        )
        .optopt("", "next_id", "alias of --next-id", "N")
        .optflag("h", "help", "print this help and exit")
        .optflag("", "version", "print the version and exit");
    opts
}

/// The usage text: the four forms, then every option.
pub fn usage() -> String {
    let brief = "\
Usage:
  ticketd [PEERS] [options]    run a node (PEERS: comma-separated host:port peer
                               addresses of all initial members)
  ticketd start [options]      wipe the data dir and start a new one-node cluster
  ticketd join PEER [options]  wipe the data dir and join PEER's cluster
  ticketd leave [options]      ask the cluster to remove this node, then stop
  ticketd drop [options]       wipe the data dir (refused while a node runs on it)
  ticketd restore FILE --next-id N [options]
                               a new one-node cluster in an empty data dir from
                               a backup (GET /api/v1/backup), serving IDs from
                               max(N, the backup's high-water mark + 1)
  ticketd --help | --version";
    options().usage(brief)
}

/// Parses the arguments (without `argv[0]`).
///
/// # Errors
/// `CliError` with a one-line reason for an unknown flag, a bad value, an
/// extra argument, or a peer list that does not name this node.
pub fn parse(args: &[String]) -> Result<Parsed, CliError> {
    let args = accept_go_style(args);
    let matches = options()
        .parse(&args)
        .map_err(|error| CliError(error.to_string()))?;
    if matches.opt_present("help") {
        return Ok(Parsed::Help);
    }
    if matches.opt_present("version") {
        return Ok(Parsed::Version);
    }
    options_from(&matches)
        .map(|options| Parsed::Run(Box::new(options)))
        .map_err(CliError)
}

/// Rewrites `-snappath DIR` (Go's flag syntax, turbosquid's command line)
/// to `--snappath DIR`; getopts would read it as `-s nappath`.
fn accept_go_style(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut options_over = false;
    for arg in args {
        options_over |= arg == "--";
        let go_style = !options_over
            && arg.strip_prefix('-').is_some_and(|rest| {
                let name = rest.split('=').next().unwrap_or(rest);
                GO_STYLE_FLAGS.contains(&name)
            });
        out.push(if go_style {
            format!("-{arg}")
        } else {
            arg.clone()
        });
    }
    out
}

fn options_from(matches: &getopts::Matches) -> Result<Options, String> {
    let (mut command, peers) = command_from(&matches.free)?;
    let next_id = match (
        matches.opt_present("next-id"),
        matches.opt_present("next_id"),
    ) {
        (true, true) => return Err("give --next-id once".into()),
        (true, false) => Some(number_option(matches, "next-id", 1, 1, u64::MAX)?),
        (false, true) => Some(number_option(matches, "next_id", 1, 1, u64::MAX)?),
        (false, false) => None,
    };
    match (&mut command, next_id) {
        (Command::Restore { next_id: slot, .. }, Some(n)) => *slot = n,
        (Command::Restore { .. }, None) => {
            return Err("restore needs --next-id N: more than the largest ticketd_ids_reserved_max the old cluster reported (see the README, \"Backup and restore\")".into());
        }
        (_, Some(_)) => return Err("--next-id is only for restore".into()),
        (_, None) => {}
    }
    let host = match matches.opt_str("host") {
        Some(host) => host_name(&host).map_err(|why| format!("--host {host:?}: {why}"))?,
        None => DEFAULT_HOST.to_string(),
    };
    let advertise = match matches.opt_str("advertise") {
        Some(advertise) => advertised_host("--advertise", &advertise)?,
        None => advertised_host("--host", &host)
            .map_err(|why| format!("{why}; give --advertise with a routable address"))?,
    };
    let peer_port = match (
        matches.opt_present("peer_port"),
        matches.opt_present("raft_port"),
    ) {
        (true, true) => return Err("give --peer_port or --raft_port, not both".into()),
        (false, true) => port_option(matches, "raft_port", DEFAULT_PEER_PORT)?,
        _ => port_option(matches, "peer_port", DEFAULT_PEER_PORT)?,
    };
    let node_id = match matches.opt_str("id") {
        None => None,
        Some(_) => Some(number_option(matches, "id", 0, 1, NODE_ID_MAX)?),
    };
    if node_id.is_some() && matches!(command, Command::Run | Command::Leave | Command::Drop) {
        return Err("--id is only for start, join and restore".into());
    }
    let http_port = port_option(matches, "http_port", DEFAULT_HTTP_PORT)?;
    let peer_addr = join_host_port(&advertise, peer_port);
    let peer_listen = join_host_port(&host, peer_port);
    let http_listen = match matches.opt_str("l") {
        Some(listen) => listen_address(&listen)?,
        None => join_host_port(&host, http_port),
    };
    let peers = match peers {
        Some(list) => peer_list(list, &peer_addr)?,
        None => Vec::new(),
    };
    if let Command::Join { peer } = &command
        && same_address(peer, &peer_addr)
    {
        return Err(format!(
            "join {peer}: that is this node's own address (--host/--peer_port)"
        ));
    }
    Ok(Options {
        command,
        peers,
        host,
        advertise,
        peer_port,
        http_port,
        node_id,
        http_listen,
        peer_addr,
        peer_listen,
        data_dir: data_dir(matches, peer_port)?,
        db_size_mb: number_option(matches, "db_size", DEFAULT_DB_SIZE_MB, 1, DB_SIZE_MB_MAX)?,
        expire_ms: number_option(matches, "expire", DEFAULT_EXPIRE_MS, 1, INTERVAL_MS_MAX)?,
        snapshot_ms: number_option(matches, "snapshot", DEFAULT_SNAPSHOT_MS, 1, INTERVAL_MS_MAX)?,
        // In range 0..=LOG_LEVEL_MAX, so the cast cannot truncate.
        log_level: number_option(
            matches,
            "loglevel",
            u64::from(DEFAULT_LOG_LEVEL),
            0,
            u64::from(LOG_LEVEL_MAX),
        )? as u8,
        redirect: redirect_option(matches)?,
        admin_token: file_option(matches, "admin_token")?,
        client_token: file_option(matches, "client_token")?,
        peer_secret: file_option(matches, "peer_secret")?,
        // At most CONNECTIONS_MAX_MAX, so the cast cannot truncate.
        connections_max: number_option(
            matches,
            "max_connections",
            DEFAULT_CONNECTIONS_MAX,
            1,
            CONNECTIONS_MAX_MAX,
        )? as usize,
    })
}

/// A file name; the file itself is read by `main`.
fn file_option(matches: &getopts::Matches, name: &str) -> Result<Option<PathBuf>, String> {
    match matches.opt_str(name) {
        Some(path) if path.is_empty() => Err(format!("--{name}: empty file name")),
        Some(path) => Ok(Some(PathBuf::from(path))),
        None => Ok(None),
    }
}

fn redirect_option(matches: &getopts::Matches) -> Result<u16, String> {
    match matches.opt_str("redirect").as_deref() {
        None | Some("301") => Ok(301),
        Some("307") => Ok(307),
        Some("308") => Ok(308),
        Some(other) => Err(format!("--redirect must be 301, 307 or 308, not {other:?}")),
    }
}

/// The subcommand, and the `PEERS` argument when one was given.
fn command_from(free: &[String]) -> Result<(Command, Option<&str>), String> {
    let Some((first, rest)) = free.split_first() else {
        return Ok((Command::Run, None));
    };
    let (command, used) = match first.as_str() {
        "start" => (Command::Start, 0),
        "leave" => (Command::Leave, 0),
        "drop" => (Command::Drop, 0),
        "restore" => {
            let file = rest
                .first()
                .filter(|f| !f.is_empty())
                .ok_or("restore needs a backup file: ticketd restore FILE --next-id N")?;
            let command = Command::Restore {
                file: PathBuf::from(file),
                next_id: 0,
            };
            (command, 1)
        }
        "join" => {
            let peer = rest
                .first()
                .ok_or("join needs the address of a member: ticketd join HOST:PORT")?;
            host_port(peer).map_err(|why| format!("join {peer}: {why}"))?;
            (Command::Join { peer: peer.clone() }, 1)
        }
        peers => return extra_arguments(rest).map(|()| (Command::Run, Some(peers))),
    };
    extra_arguments(&rest[used..]).map(|()| (command, None))
}

fn extra_arguments(rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(extra) => Err(format!("unexpected argument {extra:?}")),
    }
}

/// `PEERS`: host:port entries, no duplicates, ours among them.
fn peer_list(list: &str, own: &str) -> Result<Vec<String>, String> {
    let mut peers: Vec<String> = Vec::new();
    for entry in list.split(',') {
        host_port(entry).map_err(|why| format!("PEERS entry {entry:?}: {why}"))?;
        if peers.iter().any(|peer| same_address(peer, entry)) {
            return Err(format!("PEERS lists {entry} twice"));
        }
        if peers.len() == PEERS_MAX {
            return Err(format!("PEERS lists more than {PEERS_MAX} addresses"));
        }
        peers.push(entry.to_string());
    }
    if !peers.iter().any(|peer| same_address(peer, own)) {
        return Err(format!(
            "this node's peer address {own} (--host/--peer_port) is not in PEERS {list}"
        ));
    }
    Ok(peers)
}

/// Host names are case-insensitive.
fn same_address(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn port_option(matches: &getopts::Matches, name: &str, default: u16) -> Result<u16, String> {
    match matches.opt_str(name) {
        Some(text) => port(&text).map_err(|why| format!("--{name} {text:?}: {why}")),
        None => Ok(default),
    }
}

fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err("expected a port number 1-65535".into()),
    }
}

fn number_option(
    matches: &getopts::Matches,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, String> {
    let Some(text) = matches.opt_str(name) else {
        return Ok(default);
    };
    match text.parse::<u64>() {
        Ok(value) if (min..=max).contains(&value) => Ok(value),
        _ => Err(format!(
            "--{name} {text:?}: expected a whole number from {min} to {max}"
        )),
    }
}

fn data_dir(matches: &getopts::Matches, peer_port: u16) -> Result<PathBuf, String> {
    let dir = match (matches.opt_str("path"), matches.opt_str("snappath")) {
        (Some(_), Some(_)) => return Err("give --path or --snappath, not both".into()),
        (Some(dir), None) | (None, Some(dir)) => dir,
        (None, None) => return Ok(PathBuf::from(DEFAULT_DATA_ROOT).join(peer_port.to_string())),
    };
    if dir.is_empty() {
        return Err("--path: empty directory name".into());
    }
    Ok(PathBuf::from(dir))
}

/// The advertised host (`--advertise`, or `--host` without it): peers
/// must be able to reach it, so no wildcard address.
fn advertised_host(flag: &str, host: &str) -> Result<String, String> {
    let host = host_name(host).map_err(|why| format!("{flag} {host:?}: {why}"))?;
    let unspecified = host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_unspecified())
        || bare_ipv6(&host).is_some_and(|ip| ip.is_unspecified());
    if unspecified {
        return Err(format!(
            "{flag} {host}: peers cannot reach a wildcard address"
        ));
    }
    Ok(host)
}

/// `-l`: `host:port`; an empty host (Go's `:8001`) means every interface.
fn listen_address(text: &str) -> Result<String, String> {
    let (host, port) = host_port(text).map_err(|why| format!("-l {text:?}: {why}"))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(join_host_port(host, port))
}

/// Splits and checks `host:port` (IPv6 in brackets). The host may be
/// empty; callers that need one check it.
fn host_port(text: &str) -> Result<(&str, u16), String> {
    let (host, port_text) = text.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port = port(port_text)?;
    if !host.is_empty() {
        if host.contains(':') && !host.starts_with('[') {
            return Err("an IPv6 address needs brackets: [ADDR]:PORT".into());
        }
        host_name(host)?;
    }
    Ok((host, port))
}

/// A host name, IPv4 address, or IPv6 address (bare or in brackets).
/// Bare IPv6 comes back bracketed, ready to have `:port` appended.
fn host_name(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host.len() > HOST_LEN_MAX {
        return Err(format!("host longer than {HOST_LEN_MAX} characters"));
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| "not an IPv6 address in brackets".to_string())?;
        return Ok(host.to_string());
    }
    if host.contains(':') {
        host.parse::<Ipv6Addr>()
            .map_err(|_| "not a host name or IP address".to_string())?;
        return Ok(format!("[{host}]"));
    }
    let valid = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid || host.starts_with(['-', '.']) {
        return Err("not a host name or IP address".into());
    }
    Ok(host.to_string())
}

fn bare_ipv6(host: &str) -> Option<Ipv6Addr> {
    host.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fn join_host_port(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match parse(&args) {
            Ok(Parsed::Run(options)) => Ok(*options),
            Ok(other) => Err(format!("not a run: {other:?}")),
            Err(CliError(why)) => Err(why),
        }
    }

    fn error(args: &[&str]) -> String {
        match run(args) {
            Ok(options) => panic!("{args:?} was accepted: {options:?}"),
            Err(why) => {
                assert!(!why.contains('\n'), "{why}");
                why
            }
        }
    }

    #[test]
    fn defaults() {
        let options = run(&[]).unwrap();
        assert_eq!(
            options,
            Options {
                command: Command::Run,
                peers: Vec::new(),
                host: "127.0.0.1".into(),
                advertise: "127.0.0.1".into(),
                peer_port: 9001,
                http_port: 8001,
                node_id: None,
                http_listen: "127.0.0.1:8001".into(),
                peer_addr: "127.0.0.1:9001".into(),
                peer_listen: "127.0.0.1:9001".into(),
                data_dir: PathBuf::from("ticketd-data/9001"),
                db_size_mb: 1024,
                expire_ms: 500,
                snapshot_ms: 1000,
                log_level: 2,
                redirect: 301,
                admin_token: None,
                client_token: None,
                peer_secret: None,
                connections_max: 4096,
            }
        );
    }

    #[test]
    fn help_and_version() {
        let parse_strs =
            |args: &[&str]| parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(parse_strs(&["--help"]), Ok(Parsed::Help));
        assert_eq!(parse_strs(&["--version"]), Ok(Parsed::Version));
        assert_eq!(
            parse_strs(&["start", "--help", "--peer_port", "x"]),
            Ok(Parsed::Help)
        );
        assert_eq!(parse_strs(&["-h"]), Ok(Parsed::Help));
        let text = usage();
        for needle in [
            "ticketd [PEERS] [options]",
            "ticketd start",
            "ticketd join PEER",
            "ticketd leave",
            "--peer_port",
            "--http_port",
            "--host",
            "-l",
            "--path",
            "--snappath",
            "--db_size",
            "--expire",
            "--snapshot",
            "--loglevel",
            "--redirect",
            "--admin_token",
            "--client_token",
            "--max_connections",
        ] {
            assert!(text.contains(needle), "usage lacks {needle}:\n{text}");
        }
    }

    #[test]
    fn each_flag() {
        let options = run(&[
            "--peer_port",
            "9100",
            "--http_port=8100",
            "-H",
            "node1.example",
            "-P",
            "/var/lib/t",
            "-s",
            "64",
            "--expire",
            "250",
            "--snapshot",
            "5000",
            "--loglevel",
            "4",
        ])
        .unwrap();
        assert_eq!(options.peer_port, 9100);
        assert_eq!(options.http_port, 8100);
        assert_eq!(options.host, "node1.example");
        assert_eq!(options.peer_addr, "node1.example:9100");
        assert_eq!(options.http_listen, "node1.example:8100");
        assert_eq!(options.data_dir, PathBuf::from("/var/lib/t"));
        assert_eq!(options.db_size_mb, 64);
        assert_eq!(options.expire_ms, 250);
        assert_eq!(options.snapshot_ms, 5000);
        assert_eq!(options.log_level, 4);

        let long = run(&["--host=10.0.0.1", "--path", "d", "--db_size", "2"]).unwrap();
        assert_eq!(long.peer_addr, "10.0.0.1:9001");
        assert_eq!(long.data_dir, PathBuf::from("d"));
        assert_eq!(long.db_size_mb, 2);
        assert_eq!(
            run(&["--snappath", "snap"]).unwrap().data_dir,
            PathBuf::from("snap")
        );
        assert_eq!(
            run(&["--peer_port", "9002"]).unwrap().data_dir,
            PathBuf::from("ticketd-data/9002")
        );
        assert_eq!(run(&["--loglevel", "0"]).unwrap().log_level, 0);
    }

    #[test]
    fn listen_address_overrides_host_and_http_port_for_http_only() {
        let options = run(&["-l", "0.0.0.0:8080", "--http_port", "8100"]).unwrap();
        assert_eq!(options.http_listen, "0.0.0.0:8080");
        assert_eq!(options.http_port, 8100);
        assert_eq!(options.peer_addr, "127.0.0.1:9001");
        assert_eq!(run(&["-l", ":8080"]).unwrap().http_listen, "0.0.0.0:8080");
        assert_eq!(
            run(&["-l", "[::1]:8080"]).unwrap().http_listen,
            "[::1]:8080"
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let options = run(&["-H", "::1", "[::1]:9001,[::1]:9002"]).unwrap();
        assert_eq!(options.host, "[::1]");
        assert_eq!(options.peer_addr, "[::1]:9001");
        assert_eq!(options.peers, vec!["[::1]:9001", "[::1]:9002"]);
    }

    #[test]
    fn go_style_flags_of_turbosquid_are_accepted() {
        let options = run(&[
            "-snappath",
            "/snap",
            "-expire=100",
            "-snapshot",
            "2000",
            "-loglevel",
            "1",
            "-l",
            "0.0.0.0:8001",
        ])
        .unwrap();
        assert_eq!(options.data_dir, PathBuf::from("/snap"));
        assert_eq!(options.expire_ms, 100);
        assert_eq!(options.snapshot_ms, 2000);
        assert_eq!(options.log_level, 1);
        // After `--` nothing is rewritten.
        assert!(error(&["--", "-expire"]).contains("-expire"));
    }

    #[test]
    fn peers_and_subcommands() {
        let options = run(&[
            "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003",
            "--peer_port",
            "9002",
        ])
        .unwrap();
        assert_eq!(options.command, Command::Run);
        assert_eq!(
            options.peers,
            vec!["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
        );
        assert_eq!(
            run(&["-H", "LocalHost", "localhost:9001"])
                .unwrap()
                .peers
                .len(),
            1
        );
        assert_eq!(run(&["start", "-P", "x"]).unwrap().command, Command::Start);
        assert_eq!(run(&["leave"]).unwrap().command, Command::Leave);
        assert_eq!(run(&["drop"]).unwrap().command, Command::Drop);
        let start = run(&["start", "--id", "7", "--raft_port", "9005"]).unwrap();
        assert_eq!(start.node_id, Some(7));
        assert_eq!(start.peer_port, 9005);
        assert_eq!(start.peer_addr, "127.0.0.1:9005");
        assert!(error(&["start", "--id", "0"]).contains("--id"));
        assert!(error(&["start", "--id", "x"]).contains("--id"));
        assert!(error(&["--id", "3"]).contains("start, join and restore"));
        assert!(error(&["start", "--peer_port", "1", "--raft_port", "2"]).contains("not both"));
        let join = run(&["--peer_port", "9004", "join", "127.0.0.1:9001"]).unwrap();
        assert_eq!(
            join.command,
            Command::Join {
                peer: "127.0.0.1:9001".into()
            }
        );
        assert!(join.peers.is_empty());
    }

    #[test]
    fn restore_needs_a_file_and_next_id() {
        let restore = run(&["restore", "b.backup", "--next-id", "5000", "--id", "3"]).unwrap();
        assert_eq!(
            restore.command,
            Command::Restore {
                file: PathBuf::from("b.backup"),
                next_id: 5000
            }
        );
        assert_eq!(restore.node_id, Some(3));
        let alias = run(&["restore", "b", "--next_id", "7"]).unwrap();
        assert!(matches!(alias.command, Command::Restore { next_id: 7, .. }));
        assert!(error(&["restore", "b"]).contains("--next-id"));
        assert!(error(&["restore", "--next-id", "5"]).contains("backup file"));
        assert!(error(&["restore", "b", "--next-id", "0"]).contains("--next-id"));
        assert!(error(&["restore", "b", "--next-id", "x"]).contains("--next-id"));
        assert!(error(&["restore", "b", "c", "--next-id", "5"]).contains("unexpected"));
        assert!(error(&["start", "--next-id", "5"]).contains("only for restore"));
    }

    #[test]
    fn bad_ports() {
        for bad in ["0", "65536", "-1", "x", "", "80a"] {
            assert!(error(&["--peer_port", bad]).contains("--peer_port"));
            assert!(error(&["--http_port", bad]).contains("--http_port"));
        }
        assert!(error(&["--peer_port"]).contains("peer_port"));
    }

    #[test]
    fn redirect_codes() {
        assert_eq!(run(&[]).unwrap().redirect, 301);
        for code in ["301", "307", "308"] {
            assert_eq!(
                run(&["--redirect", code]).unwrap().redirect.to_string(),
                code
            );
        }
        for bad in ["302", "x", ""] {
            assert!(error(&["--redirect", bad]).contains("--redirect"), "{bad}");
        }
    }

    #[test]
    fn max_connections() {
        assert_eq!(
            run(&["--max_connections", "20"]).unwrap().connections_max,
            20
        );
        for bad in ["0", "-1", "x", "1048577"] {
            assert!(
                error(&["--max_connections", bad]).contains("--max_connections"),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_numbers() {
        for (flag, bad) in [
            ("--db_size", "0"),
            ("--db_size", "1048577"),
            ("-s", "lots"),
            ("--expire", "0"),
            ("--expire", "3600001"),
            ("--snapshot", "0"),
            ("--snapshot", "-5"),
            ("--loglevel", "5"),
            ("--loglevel", "two"),
        ] {
            let why = error(&[flag, bad]);
            assert!(why.contains(flag.trim_start_matches('-')), "{why}");
        }
        assert_eq!(run(&["-s", "1048576"]).unwrap().db_size_mb, 1_048_576);
        assert_eq!(run(&["--expire", "1"]).unwrap().expire_ms, 1);
    }

    #[test]
    fn bind_on_all_interfaces_and_advertise_a_routable_address() {
        let options = run(&["-H", "0.0.0.0", "--advertise", "10.0.0.1"]).unwrap();
        assert_eq!(options.host, "0.0.0.0");
        assert_eq!(options.advertise, "10.0.0.1");
        assert_eq!(options.peer_listen, "0.0.0.0:9001");
        assert_eq!(options.peer_addr, "10.0.0.1:9001");
        assert_eq!(options.http_listen, "0.0.0.0:8001");
        let options = run(&["--advertise", "node1.example"]).unwrap();
        assert_eq!(options.peer_listen, "127.0.0.1:9001");
        assert_eq!(options.peer_addr, "node1.example:9001");
        // PEERS name the advertised addresses.
        let options = run(&[
            "10.0.0.1:9001,10.0.0.2:9001",
            "-H",
            "0.0.0.0",
            "--advertise",
            "10.0.0.1",
        ])
        .unwrap();
        assert_eq!(options.peers.len(), 2);
        assert!(error(&["-H", "0.0.0.0"]).contains("--advertise"));
        assert!(error(&["--advertise", "0.0.0.0"]).contains("--advertise"));
        assert!(error(&["--advertise", "a b"]).contains("--advertise"));
    }

    #[test]
    fn bad_hosts_and_addresses() {
        for bad in ["", "a b", "-x", "host/x", "[::1", "0.0.0.0", "::", "1:2:3"] {
            assert!(error(&["-H", bad]).contains("--host"), "{bad}");
        }
        for bad in ["8080", "host:", "host:0", "::1:8080", "[zz]:80", "a b:80"] {
            assert!(error(&["-l", bad]).contains("-l"), "{bad}");
        }
        assert!(error(&["-P", ""]).contains("--path"));
        assert!(error(&["-P", "a", "--snappath", "b"]).contains("not both"));
    }

    #[test]
    fn bad_peer_lists() {
        let why = error(&["127.0.0.1:9002,127.0.0.1:9003"]);
        assert!(why.contains("127.0.0.1:9001"), "{why}");
        assert!(why.contains("127.0.0.1:9002,127.0.0.1:9003"), "{why}");
        assert!(error(&["127.0.0.1:9001,127.0.0.1:9001"]).contains("twice"));
        assert!(error(&["127.0.0.1:9001,"]).contains("PEERS"));
        assert!(error(&["127.0.0.1:9001,nohost"]).contains("nohost"));
        assert!(error(&["127.0.0.1:9001,h:99999"]).contains("h:99999"));
        let many: Vec<String> = (1..=17)
            .map(|i| format!("127.0.0.1:{}", 9000 + i))
            .collect();
        assert!(error(&[&many.join(",")]).contains("more than"));
    }

    #[test]
    fn bad_commands_and_arguments() {
        assert!(error(&["--bogus"]).contains("bogus"));
        assert!(error(&["-x"]).contains('x'));
        assert!(error(&["--help=yes"]).contains("help"));
        assert!(error(&["127.0.0.1:9001", "extra"]).contains("extra"));
        assert!(error(&["start", "127.0.0.1:9001"]).contains("127.0.0.1:9001"));
        assert!(error(&["leave", "now"]).contains("now"));
        assert!(error(&["join"]).contains("join"));
        assert!(error(&["join", "nowhere"]).contains("nowhere"));
        assert!(error(&["join", "h:1", "h:2"]).contains("h:2"));
        assert!(error(&["join", "127.0.0.1:9001"]).contains("own address"));
        assert!(error(&["--expire", "1", "--expire", "2"]).contains("more than once"));
    }
}
