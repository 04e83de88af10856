//! The client-facing HTTP server: a pool of tiny_http worker threads that
//! parse and validate requests, check this node's role, hand commands to
//! the node thread, and map every outcome and error to a status code.
//!
//! It may not touch Raft, LMDB or peers: everything goes through
//! [`NodeHandle`]; IDs come straight from the shared ID pool.

mod api;
mod ids;
mod listener;
mod ops;
mod request;
mod respond;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, warn};
use tiny_http::{Method, Request, Server};

use crate::node::NodeHandle;
use request::Target;
use respond::Answer;

pub use ids::render as render_ids;
pub use listener::bind as bind_listener;
pub use request::percent_decode;

/// Worker threads. Requests with `?wait=` hold one for their wait, so
/// there are many more than cores.
pub const WORKERS: usize = 64;

/// Requests answered, by route and status, for `/metrics`.
#[derive(Debug, Default)]
pub struct RequestCounts {
    counts: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl RequestCounts {
    fn add(&self, route: &'static str, status: u16) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((route, status)).or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<(&'static str, u16), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What every worker shares.
pub struct Context {
    pub node: NodeHandle,
    pub counts: RequestCounts,
}

/// The running HTTP server.
pub struct HttpServer {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    pub local_addr: String,
}

impl HttpServer {
    /// Binds `listen` (`host:port`) and starts the workers.
    ///
    /// # Errors
    /// The bind error, with the address.
    pub fn start(listen: &str, node: NodeHandle) -> Result<HttpServer, String> {
        let listener =
            listener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local_addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| listen.to_string());
        let server = Server::from_listener(listener, None)
            .map_err(|e| format!("cannot serve HTTP on {listen}: {e}"))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let context = Arc::new(Context {
            node,
            counts: RequestCounts::default(),
        });
        let mut workers = Vec::with_capacity(WORKERS);
        for n in 0..WORKERS {
            let server = Arc::clone(&server);
            let stop = Arc::clone(&stop);
            let context = Arc::clone(&context);
            let worker = std::thread::Builder::new()
                .name(format!("http-{n}"))
                .spawn(move || work(&server, &stop, &context))
                .map_err(|e| format!("cannot start HTTP workers: {e}"))?;
            workers.push(worker);
        }
        Ok(HttpServer {
            server,
            stop,
            workers,
            local_addr,
        })
    }

    /// Stops taking requests, lets the workers finish the ones they hold,
    /// and joins them.
    pub fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

fn work(server: &Server, stop: &AtomicBool, context: &Context) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => handle(request, context),
            Ok(None) => {}
            Err(e) => {
                debug!("HTTP receive failed: {e}");
            }
        }
    }
}

fn handle(mut request: Request, context: &Context) {
    let target = Target::parse(request.url());
    let url = Target::path_and_query(request.url()).to_string();
    let method = request.method().clone();
    let (route, answer) = route(&mut request, &method, &target, &url, context);
    let status = answer.status_code().0;
    context.counts.add(route, status);
    if let Err(e) = request.respond(answer) {
        debug!("could not answer {url}: {e}");
    }
}

/// Reads a request body of at most `limit` bytes; `Err` when it is larger.
pub(crate) fn read_body(request: &mut Request, limit: usize) -> Result<Vec<u8>, Answer> {
    let mut body = Vec::new();
    let reader = request.as_reader();
    match reader.take(limit as u64 + 1).read_to_end(&mut body) {
        Ok(_) if body.len() > limit => Err(respond::error(
            413,
            &format!("request body is larger than {limit} bytes"),
        )),
        Ok(_) => Ok(body),
        Err(e) => {
            warn!("could not read a request body: {e}");
            Err(respond::error(400, "could not read the request body"))
        }
    }
}

fn route(
    request: &mut Request,
    method: &Method,
    target: &Target,
    url: &str,
    context: &Context,
) -> (&'static str, Answer) {
    let path = target.path();
    match path.as_slice() {
        [] => ("ids", ids::handle(method, target, url, context)),
        ["healthz"] => ("healthz", ops::healthz(method)),
        ["readyz"] => ("readyz", ops::readyz(method, context)),
        ["metrics"] => ("metrics", ops::metrics(method, context)),
        ["api", "v1", "status"] => ("status", ops::status(method, context)),
        ["api", "v1", "cluster", rest @ ..] => ops::cluster(method, rest, target, url, context),
        ["api", "v1", rest @ ..] => api::handle(request, method, rest, target, url, context),
        _ => (
            "unknown",
            respond::error(404, &format!("no such path: {}", url_path(url))),
        ),
    }
}

fn url_path(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Where a request that only the leader answers must go instead, when
/// this node is not the leader: 301/307 to it, or 503 if none is known.
pub(crate) fn not_here(context: &Context, redirect_status: u16, url: &str) -> Option<Answer> {
    let (role, leader_http) = context.node.shared.role_and_leader_http();
    if role == crate::raft::Role::Leader {
        return None;
    }
    let error = crate::node::NodeError::NotLeader { leader_http };
    Some(respond::node_error(&error, redirect_status, url))
}

/// The answer to a known path with the wrong method.
pub(crate) fn wrong_method(method: &Method, allowed: &str) -> Answer {
    let response = respond::error(
        405,
        &format!("method {method} not allowed here; use {allowed}"),
    );
    match tiny_http::Header::from_bytes("Allow", allowed) {
        Ok(h) => response.with_header(h),
        Err(()) => response,
    }
}
