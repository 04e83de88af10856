//! turbosquid's `/api/v1` sessions, tickets, claims, locks and dumps:
//! carries out what `plan.rs` decided. Changes become commands proposed
//! through the node; reads run on the leader under its lease. Followers
//! redirect with 307.

use std::time::Duration;

use tiny_http::{Method, Request};

use super::plan::{self, Plan, Query, Reply};
use super::request::Target;
use super::respond::{self, Answer};
use super::{Context, read_body, wrong_method};
use crate::node::{Input, NodeError, PROPOSAL_TIMEOUT};
use crate::ticket::{
    ApplyError, Command, Outcome, SessionId, State, TICKET_DATA_BYTES_MAX, claim_json,
    session_id_json, string_json,
};

pub fn handle(
    request: &mut Request,
    method: &Method,
    rest: &[&str],
    target: &Target,
    url: &str,
    context: &Context,
) -> (&'static str, Answer) {
    let route = plan::route_name(rest);
    if route == "unknown" {
        return (
            route,
            respond::error(
                404,
                &format!("no such path: {}", url.split('?').next().unwrap_or(url)),
            ),
        );
    }
    if let Some(answer) = super::not_here(context, 307, url) {
        return (route, answer);
    }
    let body = if plan::takes_body(method, rest) {
        match read_body(request, TICKET_DATA_BYTES_MAX) {
            Ok(data) => data,
            Err(answer) => return (route, answer),
        }
    } else {
        Vec::new()
    };
    let remote = request.remote_addr().copied();
    let call = Call { context, url };
    let answer = match plan::plan(method, rest, target, remote, body) {
        Plan::Propose {
            command,
            wait,
            reply,
        } => call.propose(command, wait, reply),
        Plan::Refresh(session) => call.refresh(session),
        Plan::Read(query) => call.query(query),
        Plan::WrongMethod(allowed) => wrong_method(method, allowed),
        Plan::Refuse { status, why } => respond::error(status, &why),
    };
    (route, answer)
}

/// One request's context for carrying out its plan.
struct Call<'a> {
    context: &'a Context,
    url: &'a str,
}

impl Call<'_> {
    fn node_error(&self, error: &NodeError) -> Answer {
        respond::node_error(error, 307, self.url)
    }

    /// Proposes `command`, waits for its outcome and answers it.
    fn propose(&self, command: Command, wait: Option<Duration>, reply: Reply) -> Answer {
        let timeout = PROPOSAL_TIMEOUT + Duration::from_secs(1) + wait.unwrap_or_default();
        let outcome = self.context.node.call(
            |reply| Input::Propose {
                command,
                wait,
                reply,
            },
            timeout,
        );
        match (reply, outcome) {
            (_, Err(error)) => self.node_error(&error),
            (_, Ok(Outcome::Failed(error))) => apply_error(&error),
            (Reply::Ok, Ok(_)) => respond::json(string_json("Ok")),
            (Reply::LowerOk, Ok(_)) => respond::json(string_json("ok")),
            (Reply::SessionId, Ok(Outcome::SessionOpened { id })) => {
                respond::json(session_id_json(id))
            }
            (
                Reply::Claim,
                Ok(Outcome::Claim {
                    claimed,
                    ticket,
                    fencing_token,
                }),
            ) => respond::with_fencing_token(
                respond::json(claim_json(claimed, ticket.as_ref())),
                fencing_token,
            ),
            (
                Reply::Lock,
                Ok(Outcome::Lock {
                    granted,
                    fencing_token,
                }),
            ) => respond::with_fencing_token(respond::json(granted.to_string()), fencing_token),
            (_, Ok(_)) => respond::error(500, "unexpected outcome"),
        }
    }

    fn refresh(&self, session: SessionId) -> Answer {
        let result = self
            .context
            .node
            .call(|reply| Input::Refresh { session, reply }, PROPOSAL_TIMEOUT);
        match result {
            Ok(()) => respond::json(string_json("Ok")),
            Err(error) => self.node_error(&error),
        }
    }

    fn query(&self, query: Query) -> Answer {
        match query {
            Query::Sessions => self.read(|state| Ok(state.dump_sessions_json())),
            Query::Resources(None) => {
                self.read(|state| Ok(state.dump_resources_json(None).unwrap_or_default()))
            }
            Query::Resources(Some(name)) => self.read(move |state| {
                state
                    .dump_resources_json(Some(&name))
                    .ok_or_else(|| ApplyError::UnknownResource(name.clone()))
            }),
            Query::Session(id) => {
                self.read(move |state| state.session_json(id).ok_or(ApplyError::UnknownSession(id)))
            }
            Query::HasClaim {
                session,
                resource,
                name,
            } => self.read(move |state| {
                state
                    .has_claim(session, &resource, &name)
                    .map(|held| held.to_string())
            }),
        }
    }

    /// Runs `query` on the leader's applied state.
    fn read(&self, query: impl FnOnce(&State) -> Result<String, ApplyError>) -> Answer {
        // The node thread only clones the state; rendering happens here.
        let view = self.context.node.call(Input::View, PROPOSAL_TIMEOUT);
        match view.map(|state| query(&state)) {
            Ok(Ok(body)) => respond::json(body),
            Ok(Err(error)) => apply_error(&error),
            Err(error) => self.node_error(&error),
        }
    }
}

fn apply_error(error: &ApplyError) -> Answer {
    respond::error(error.status(), &error.to_string())
}
