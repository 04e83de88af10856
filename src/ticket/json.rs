//! JSON rendering in the exact shapes turbosquid's Go client decodes
//! (SPEC "HTTP: sessions, tickets, locks").
//!
//! Owns: JSON text for sessions, tickets, resources and claim answers.
//! May not touch: the state beyond reading it, or HTTP (the caller adds
//! the status, headers, and the trailing newline Go's `json.Encoder` writes).
//!
//! Go's `encoding/json` rules we follow, so bodies match byte for byte:
//! struct fields in declaration order; map keys sorted bytewise (session
//! ids are map keys as decimal strings, so "10" sorts before "9"); `[]byte`
//! as padded standard base64; strings escaped as Go does, including
//! `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes (Go's HTML-safe default).

use super::base64;
use super::state::{Resource, State};
use super::view::{SessionView, TicketView};
use super::SessionId;

/// `s` as a JSON string literal, escaped as Go escapes it.
pub fn string_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_string(&mut out, s);
    out
}

/// A session id as turbosquid's clients expect it: a JSON string.
pub fn session_id_json(id: SessionId) -> String {
    format!("\"{id}\"")
}

/// One ticket: `{"Name","ResourceName","Data","Issuer","Claimant"}`.
pub fn ticket_json(ticket: &TicketView) -> String {
    let mut out = String::new();
    push_ticket(&mut out, ticket);
    out
}

/// The answer to a claim, `{"Claimed":bool,"Ticket":Ticket}`. Go's
/// `TicketResponse` holds the ticket by value, so an unsuccessful claim
/// carries a zero ticket rather than `null`.
pub fn claim_json(claimed: bool, ticket: Option<&TicketView>) -> String {
    let mut out = String::from(if claimed { "{\"Claimed\":true,\"Ticket\":" } else { "{\"Claimed\":false,\"Ticket\":" });
    match ticket.filter(|_| claimed) {
        Some(ticket) => push_ticket(&mut out, ticket),
        None => out.push_str(ZERO_TICKET),
    }
    out.push('}');
    out
}

const ZERO_TICKET: &str = "{\"Name\":\"\",\"ResourceName\":\"\",\"Data\":null,\"Issuer\":null,\"Claimant\":null}";

impl State {
    /// The session as `GET /api/v1/sessions/{id}` shows it; `None` if it
    /// does not exist.
    pub fn session_json(&self, id: SessionId) -> Option<String> {
        let mut out = String::new();
        self.push_session(&mut out, id)?;
        Some(out)
    }

    /// `{id: Session}` for every session.
    pub fn dump_sessions_json(&self) -> String {
        let mut keys: Vec<(String, SessionId)> = self.sessions.keys().map(|id| (id.to_string(), *id)).collect();
        keys.sort();
        let mut out = String::from("{");
        for (i, (key, id)) in keys.iter().enumerate() {
            push_separator(&mut out, i);
            push_string(&mut out, key);
            out.push(':');
            self.push_session(&mut out, *id);
        }
        out.push('}');
        out
    }

    /// `{name: Resource}` for every resource, or for the one named;
    /// `None` when the named resource does not exist.
    pub fn dump_resources_json(&self, name: Option<&str>) -> Option<String> {
        let mut out = String::from("{");
        match name {
            Some(name) => {
                let resource = self.resources.get(name)?;
                self.push_resource_entry(&mut out, name, resource);
            }
            None => {
                for (i, (name, resource)) in self.resources.iter().enumerate() {
                    push_separator(&mut out, i);
                    self.push_resource_entry(&mut out, name, resource);
                }
            }
        }
        out.push('}');
        Some(out)
    }

    /// A full session: its claimed tickets, then what it issued. A lock it
    /// holds is listed among its issuances, as turbosquid stores locks.
    fn push_session(&self, out: &mut String, id: SessionId) -> Option<()> {
        let session = self.sessions.get(&id)?;
        let view = self.session_view(id)?;
        push_session_head(out, &view);
        out.push_str(",\"Tickets\":[");
        let claims = session.claims.iter().map(|(r, n)| (r.as_str(), n.as_str()));
        self.push_ticket_list(out, claims);
        out.push_str("],\"Issuances\":[");
        let mut issued: Vec<(&str, &str)> = session.issued.iter().map(|(r, n)| (r.as_str(), n.as_str())).collect();
        issued.extend(session.locks.iter().map(|r| (r.as_str(), r.as_str())));
        issued.sort_unstable();
        self.push_ticket_list(out, issued.into_iter());
        out.push_str("]}");
        Some(())
    }

    fn push_ticket_list<'a>(&self, out: &mut String, keys: impl Iterator<Item = (&'a str, &'a str)>) {
        let views = keys.filter_map(|(resource, name)| self.ticket_view(resource, name));
        for (i, view) in views.enumerate() {
            push_separator(out, i);
            push_ticket(out, &view);
        }
    }

    fn push_resource_entry(&self, out: &mut String, name: &str, resource: &Resource) {
        push_string(out, name);
        out.push_str(":{\"Name\":");
        push_string(out, name);
        let names: Vec<&str> = match resource {
            Resource::Tickets(tickets) => {
                out.push_str(",\"IsLock\":false,\"Tickets\":{");
                tickets.keys().map(String::as_str).collect()
            }
            Resource::Lock(_) => {
                out.push_str(",\"IsLock\":true,\"Tickets\":{");
                vec![name]
            }
        };
        for (i, ticket) in names.into_iter().enumerate() {
            push_separator(out, i);
            push_string(out, ticket);
            out.push(':');
            match self.ticket_view(name, ticket) {
                Some(view) => push_ticket(out, &view),
                None => out.push_str("null"),
            }
        }
        out.push_str("}}");
    }
}

fn push_separator(out: &mut String, index: usize) {
    if index > 0 {
        out.push(',');
    }
}

/// The fields every session form starts with, without the closing brace.
fn push_session_head(out: &mut String, session: &SessionView) {
    out.push_str("{\"Name\":");
    push_string(out, &session.name);
    out.push_str(",\"Id\":");
    out.push_str(&session_id_json(session.id));
    out.push_str(",\"Src\":");
    push_string(out, &session.src);
    out.push_str(",\"Ttl\":");
    out.push_str(&session.ttl_ms.to_string());
}

fn push_nested_session(out: &mut String, session: Option<&SessionView>) {
    match session {
        Some(session) => {
            push_session_head(out, session);
            out.push_str(",\"Tickets\":[],\"Issuances\":[]}");
        }
        None => out.push_str("null"),
    }
}

fn push_ticket(out: &mut String, ticket: &TicketView) {
    out.push_str("{\"Name\":");
    push_string(out, &ticket.name);
    out.push_str(",\"ResourceName\":");
    push_string(out, &ticket.resource);
    out.push_str(",\"Data\":\"");
    base64::encode_into(out, &ticket.data);
    out.push_str("\",\"Issuer\":");
    push_nested_session(out, ticket.issuer.as_ref());
    out.push_str(",\"Claimant\":");
    push_nested_session(out, ticket.claimant.as_ref());
    out.push('}');
}

fn push_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let code = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[code >> 4]));
                out.push(char::from(HEX[code & 0xf]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
