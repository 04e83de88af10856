//! Who may call what (SPEC "Security"): bearer tokens from files.
//!
//! - Admin calls — membership changes and leadership transfer
//!   (`POST`/`DELETE` under `/api/v1/cluster`), dumps and backups — need
//!   `--admin_token`'s value; without that flag they are taken only from
//!   loopback clients, so a node on a network cannot be reconfigured by
//!   whoever reaches its HTTP port.
//! - Every other request needs `--client_token`'s value (or the admin
//!   token) when that flag is given — except `/healthz` and `/readyz`,
//!   which load balancers and orchestrators probe without credentials
//!   and which tell nothing but "up" and "ready". `/metrics` does need
//!   it: it names the members, the leader and the load (Prometheus
//!   scrapes with `authorization: credentials_file`).
//!
//! Tokens are compared in constant time ([`Secret::accepts`]).

use std::net::SocketAddr;

use tiny_http::Method;

use super::request::Target;
use super::respond::{self, Answer};
use crate::secret::Secret;

/// The configured tokens.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    pub admin: Option<Secret>,
    pub client: Option<Secret>,
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Open,
    Client,
    Admin,
}

fn class(method: &Method, target: &Target) -> Class {
    match target.path().as_slice() {
        ["healthz"] | ["readyz"] => Class::Open,
        ["api", "v1", "cluster", ..] if *method != Method::Get => Class::Admin,
        ["api", "v1", "dump", ..] | ["api", "v1", "backup", ..] => Class::Admin,
        _ => Class::Client,
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Tokens {
    /// `Ok` when the request may go on; otherwise the answer: `401` for a
    /// missing or wrong token, `403` for an admin call from afar when no
    /// admin token is configured.
    pub fn check(
        &self,
        method: &Method,
        target: &Target,
        authorization: Option<&str>,
        remote: Option<&SocketAddr>,
    ) -> Result<(), Answer> {
        let token = authorization.and_then(bearer).map(str::as_bytes);
        let holds = |secret: &Option<Secret>| {
            secret
                .as_ref()
                .is_some_and(|s| token.is_some_and(|t| s.accepts(t)))
        };
        match class(method, target) {
            Class::Open => Ok(()),
            Class::Admin if self.admin.is_some() => {
                if holds(&self.admin) {
                    Ok(())
                } else {
                    Err(unauthorized("this call needs the admin token"))
                }
            }
            Class::Admin => {
                if !remote.is_some_and(|addr| addr.ip().is_loopback()) {
                    return Err(respond::error(
                        403,
                        "admin calls are taken from loopback clients only (start the nodes with --admin_token to allow others)",
                    ));
                }
                self.check_client(holds(&self.client))
            }
            Class::Client => self.check_client(holds(&self.client) || holds(&self.admin)),
        }
    }

    fn check_client(&self, holds: bool) -> Result<(), Answer> {
        if self.client.is_none() || holds {
            Ok(())
        } else {
            Err(unauthorized("this call needs the client token"))
        }
    }
}

fn unauthorized(why: &str) -> Answer {
    let answer = respond::error(401, &format!("{why}: send Authorization: Bearer <token>"));
    match tiny_http::Header::from_bytes("WWW-Authenticate", "Bearer realm=\"ticketd\"") {
        Ok(header) => answer.with_header(header),
        Err(()) => answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const CLIENT: &str = "client-token-0123456789";

    fn tokens(admin: bool, client: bool) -> Tokens {
        let secret = |value: &str| Secret::parse(value, 16).ok();
        Tokens {
            admin: if admin { secret(ADMIN) } else { None },
            client: if client { secret(CLIENT) } else { None },
        }
    }

    fn status(
        tokens: &Tokens,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        from: &str,
    ) -> u16 {
        let target = Target::parse(path).unwrap();
        let header = bearer.map(|t| format!("Bearer {t}"));
        let remote: SocketAddr = from.parse().unwrap();
        match tokens.check(&method, &target, header.as_deref(), Some(&remote)) {
            Ok(()) => 200,
            Err(answer) => answer.status_code().0,
        }
    }

    const LOCAL: &str = "127.0.0.1:5000";
    const REMOTE: &str = "10.1.2.3:5000";

    #[test]
    fn without_tokens_admin_calls_are_for_loopback_clients_only() {
        let open = tokens(false, false);
        let members = "/api/v1/cluster/members?peer=a:1&http=a:2";
        assert_eq!(status(&open, Method::Post, members, None, LOCAL), 200);
        assert_eq!(status(&open, Method::Post, members, None, REMOTE), 403);
        assert_eq!(
            status(
                &open,
                Method::Delete,
                "/api/v1/cluster/members/1",
                None,
                "[::1]:9"
            ),
            200
        );
        assert_eq!(
            status(
                &open,
                Method::Delete,
                "/api/v1/cluster/members/1",
                None,
                REMOTE
            ),
            403
        );
        assert_eq!(
            status(&open, Method::Get, "/api/v1/dump/sessions", None, REMOTE),
            403
        );
        assert_eq!(
            status(&open, Method::Get, "/api/v1/cluster", None, REMOTE),
            200
        );
        assert_eq!(status(&open, Method::Post, "/", None, REMOTE), 200);
    }

    #[test]
    fn an_admin_token_opens_admin_calls_to_any_client_that_holds_it() {
        let t = tokens(true, false);
        let transfer = "/api/v1/cluster/transfer?to=2";
        assert_eq!(status(&t, Method::Post, transfer, Some(ADMIN), REMOTE), 200);
        assert_eq!(status(&t, Method::Post, transfer, None, LOCAL), 401);
        assert_eq!(status(&t, Method::Post, transfer, Some(CLIENT), LOCAL), 401);
        assert_eq!(status(&t, Method::Post, "/", None, REMOTE), 200);
    }

    #[test]
    fn a_client_token_guards_everything_but_the_probes() {
        let t = tokens(true, true);
        for (method, path) in [
            (Method::Post, "/"),
            (Method::Post, "/api/v1/sessions?name=a"),
            (Method::Get, "/api/v1/status"),
            (Method::Get, "/api/v1/cluster"),
            (Method::Get, "/metrics"),
        ] {
            assert_eq!(status(&t, method.clone(), path, None, LOCAL), 401, "{path}");
            assert_eq!(
                status(&t, method.clone(), path, Some("wrong-token-0123456"), LOCAL),
                401
            );
            assert_eq!(
                status(&t, method.clone(), path, Some(CLIENT), REMOTE),
                200,
                "{path}"
            );
            assert_eq!(status(&t, method, path, Some(ADMIN), REMOTE), 200, "{path}");
        }
        for path in ["/healthz", "/readyz"] {
            assert_eq!(status(&t, Method::Get, path, None, REMOTE), 200, "{path}");
        }
        // The client token does not make an admin.
        let dump = "/api/v1/dump/resources";
        assert_eq!(status(&t, Method::Get, dump, Some(CLIENT), LOCAL), 401);
        // Without an admin token, an admin call needs loopback and the
        // client token.
        let t = tokens(false, true);
        assert_eq!(status(&t, Method::Get, dump, Some(CLIENT), LOCAL), 200);
        assert_eq!(status(&t, Method::Get, dump, None, LOCAL), 401);
        assert_eq!(status(&t, Method::Get, dump, Some(CLIENT), REMOTE), 403);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
