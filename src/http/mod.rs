//! The client-facing HTTP server: tiny_http's connection threads parse and
//! validate requests, check this node's role, hand commands to
//! the node thread, and map every outcome and error to a status code.
//!
//! It may not touch Raft, LMDB or peers: everything goes through
//! [`NodeHandle`]; IDs come straight from the shared ID pool.

mod api;
mod auth;
mod backup;
mod ids;
mod listener;
mod metrics;
mod ops;
mod plan;
mod request;
mod respond;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, warn};
use tiny_http::{Method, Request, Server};

use crate::metrics::{Buckets, SECONDS_BUCKETS};
use crate::node::NodeHandle;
use respond::Answer;

pub use auth::Tokens;
pub use ids::render as render_ids;
pub use listener::bind as bind_listener;
pub use plan::{
    Plan, Query, Reply, plan as plan_api, route_name as api_route_name,
    takes_body as api_takes_body,
};
pub use request::{Target, percent_decode};

/// How long [`HttpServer::shutdown`] waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Shards of [`RequestCounts`]: one lock per request would have every
/// connection's thread queue on it.
const COUNT_SHARDS: usize = 16;

/// One shard of [`RequestCounts`].
#[derive(Debug, Default)]
struct CountShard {
    by_status: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Buckets>,
}

/// Requests answered, by route and status, and their latency by route,
/// for `/metrics`.
#[derive(Debug, Default)]
pub struct RequestCounts {
    shards: [Mutex<CountShard>; COUNT_SHARDS],
}

impl RequestCounts {
    fn add(&self, route: &'static str, status: u16, took: Duration) {
        thread_local! {
            static SHARD: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) % COUNT_SHARDS
            };
        }
        let shard = SHARD.with(|s| *s);
        let mut counts = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        *counts.by_status.entry((route, status)).or_insert(0) += 1;
        counts
            .latency
            .entry(route)
            .or_insert_with(|| Buckets::new(SECONDS_BUCKETS))
            .observe_duration(took);
    }

    /// Counts by (route, status).
    pub fn snapshot(&self) -> BTreeMap<(&'static str, u16), u64> {
        let mut total = BTreeMap::new();
        for shard in &self.shards {
            let counts = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (key, count) in counts.by_status.iter() {
                *total.entry(*key).or_insert(0) += count;
            }
        }
        total
    }

    /// Latency histograms by route.
    pub fn latency(&self) -> BTreeMap<&'static str, Buckets> {
        let mut total: BTreeMap<&'static str, Buckets> = BTreeMap::new();
        for shard in &self.shards {
            let counts = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (route, buckets) in counts.latency.iter() {
                match total.get_mut(route) {
                    Some(sum) => sum.merge(buckets),
                    None => {
                        total.insert(route, buckets.clone());
                    }
                }
            }
        }
        total
    }
}

/// How the HTTP side answers, from the command line.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// A follower's redirect for `POST /`: 301 (willemt's), 307 or 308.
    pub id_redirect: u16,
    /// Bearer tokens for admin and client calls.
    pub tokens: Tokens,
    /// Connections served at once (`--max_connections`); one more is
    /// answered `503` and closed by tiny_http's accept thread. A request
    /// that waits (`?wait=`) holds its connection, so it counts.
    pub connections_max: usize,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            id_redirect: 301,
            tokens: Tokens::default(),
            connections_max: tiny_http::CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// What every request handler shares.
pub struct Context {
    pub node: NodeHandle,
    pub options: HttpOptions,
    pub counts: RequestCounts,
    /// Set by [`HttpServer::shutdown`]: new requests get 503.
    stopping: AtomicBool,
    /// Requests being handled now.
    in_flight: AtomicUsize,
}

/// The running HTTP server.
pub struct HttpServer {
    server: Server,
    context: Arc<Context>,
    pub local_addr: String,
}

impl HttpServer {
    /// Binds `listen` (`host:port`) and starts serving.
    ///
    /// Each request is handled on the thread that read it from its
    /// connection (tiny_http starts one per connection): no hand-off to a
    /// worker pool, so a request costs two fewer context switches. A
    /// request that waits (for a commit, or `?wait=`) holds only its own
    /// connection, as HTTP/1.1 does anyway.
    ///
    /// # Errors
    /// The bind error, with the address.
    pub fn start(
        listen: &str,
        node: NodeHandle,
        options: HttpOptions,
    ) -> Result<HttpServer, String> {
        let listener =
            listener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local_addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| listen.to_string());
        let connections_max = options.connections_max;
        let context = Arc::new(Context {
            node,
            options,
            counts: RequestCounts::default(),
            stopping: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        });
        let handler_context = Arc::clone(&context);
        let handler: tiny_http::Handler =
            Arc::new(move |request| handle(request, &handler_context));
        let server =
            Server::from_listener_with_handler_and_limit(listener, handler, connections_max)
                .map_err(|e| format!("cannot serve HTTP on {listen}: {e}"))?;
        Ok(HttpServer {
            server,
            context,
            local_addr,
        })
    }

    /// Stops taking requests (new ones get 503) and waits a little for
    /// the ones in progress to be answered.
    pub fn shutdown(self) {
        self.context.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.context.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(self.server);
    }
}

fn handle(mut request: Request, context: &Context) {
    context.in_flight.fetch_add(1, Ordering::SeqCst);
    let started = Instant::now();
    let url = Target::path_and_query(request.url()).to_string();
    let method = request.method().clone();
    let (route, answer) = if context.stopping.load(Ordering::SeqCst) {
        let error = crate::node::NodeError::Unavailable("node is shutting down".into());
        ("stopping", respond::node_error(&error, 307, &url))
    } else {
        match Target::parse(request.url()) {
            Err(why) => ("bad-target", respond::error(400, &why)),
            Ok(target) => match authorize(&request, &method, &target, context) {
                Err(answer) => ("unauthorized", answer),
                Ok(()) => route(&mut request, &method, &target, &url, context),
            },
        }
    };
    let status = answer.status_code().0;
    if let Err(e) = request.respond(answer) {
        debug!("could not answer {url}: {e}");
    }
    context.counts.add(route, status, started.elapsed());
    context.in_flight.fetch_sub(1, Ordering::SeqCst);
}

fn authorize(
    request: &Request,
    method: &Method,
    target: &Target,
    context: &Context,
) -> Result<(), Answer> {
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str());
    context
        .options
        .tokens
        .check(method, target, authorization, request.remote_addr())
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
        ["healthz"] => ("healthz", ops::healthz(method, context)),
        ["readyz"] => ("readyz", ops::readyz(method, context)),
        ["metrics"] => ("metrics", metrics::handle(method, context)),
        ["api", "v1", "status"] => ("status", ops::status(method, context)),
        ["api", "v1", "backup"] => ("backup", backup::handle(method, url, context)),
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
    if context.node.shared.is_leader() {
        return None;
    }
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
