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

use super::SessionId;
use super::base64;
use super::state::{Resource, State};
use super::view::{SessionView, TicketView};

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
    let mut out = String::from(if claimed {
        "{\"Claimed\":true,\"Ticket\":"
    } else {
        "{\"Claimed\":false,\"Ticket\":"
    });
    match ticket.filter(|_| claimed) {
        Some(ticket) => push_ticket(&mut out, ticket),
        None => out.push_str(ZERO_TICKET),
    }
    out.push('}');
    out
}

const ZERO_TICKET: &str =
    "{\"Name\":\"\",\"ResourceName\":\"\",\"Data\":null,\"Issuer\":null,\"Claimant\":null}";

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
        let mut keys: Vec<(String, SessionId)> = self
            .sessions
            .keys()
            .map(|id| (id.to_string(), *id))
            .collect();
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
        let mut issued: Vec<(&str, &str)> = session
            .issued
            .iter()
            .map(|(r, n)| (r.as_str(), n.as_str()))
            .collect();
        issued.extend(session.locks.iter().map(|r| (r.as_str(), r.as_str())));
        issued.sort_unstable();
        self.push_ticket_list(out, issued.into_iter());
        out.push_str("]}");
        Some(())
    }

    fn push_ticket_list<'a>(
        &self,
        out: &mut String,
        keys: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{Command, Outcome};

    const ISSUER: &str = r#"{"Name":"issuer","Id":"1","Src":"10.0.0.1:4000","Ttl":5000,"Tickets":[],"Issuances":[]}"#;
    const CLAIMANT: &str = r#"{"Name":"claimant","Id":"2","Src":"10.0.0.2:4000","Ttl":100,"Tickets":[],"Issuances":[]}"#;

    /// issuer (1) issued r/t ("FOO"), claimant (2) claimed it and holds lock l.
    fn small_state() -> (State, Outcome) {
        let mut state = State::new();
        let open = |name: &str, src: &str, ttl_ms| Command::OpenSession {
            name: name.into(),
            src: src.into(),
            ttl_ms,
        };
        state.apply(&open("issuer", "10.0.0.1:4000", 5000));
        state.apply(&open("claimant", "10.0.0.2:4000", 100));
        let issue = Command::IssueTicket {
            session: 1,
            resource: "r".into(),
            name: "t".into(),
            data: b"FOO".to_vec(),
        };
        state.apply(&issue);
        let claim = state.apply(&Command::Claim {
            session: 2,
            resource: "r".into(),
        });
        state.apply(&Command::Lock {
            session: 2,
            resource: "l".into(),
        });
        (state, claim)
    }

    fn ticket_t() -> String {
        format!(
            r#"{{"Name":"t","ResourceName":"r","Data":"Rk9P","Issuer":{ISSUER},"Claimant":{CLAIMANT}}}"#
        )
    }

    fn lock_l() -> String {
        format!(
            r#"{{"Name":"l","ResourceName":"l","Data":"","Issuer":{CLAIMANT},"Claimant":null}}"#
        )
    }

    #[test]
    fn session_shapes() {
        let (state, _) = small_state();
        let issuer = format!(
            r#"{{"Name":"issuer","Id":"1","Src":"10.0.0.1:4000","Ttl":5000,"Tickets":[],"Issuances":[{}]}}"#,
            ticket_t()
        );
        assert_eq!(state.session_json(1), Some(issuer.clone()));
        let claimant = format!(
            r#"{{"Name":"claimant","Id":"2","Src":"10.0.0.2:4000","Ttl":100,"Tickets":[{}],"Issuances":[{}]}}"#,
            ticket_t(),
            lock_l()
        );
        assert_eq!(state.session_json(2), Some(claimant.clone()));
        assert_eq!(state.session_json(3), None);
        assert_eq!(
            state.dump_sessions_json(),
            format!(r#"{{"1":{issuer},"2":{claimant}}}"#)
        );
    }

    #[test]
    fn resource_shapes() {
        let (state, _) = small_state();
        let l = format!(
            r#""l":{{"Name":"l","IsLock":true,"Tickets":{{"l":{}}}}}"#,
            lock_l()
        );
        let r = format!(
            r#""r":{{"Name":"r","IsLock":false,"Tickets":{{"t":{}}}}}"#,
            ticket_t()
        );
        assert_eq!(
            state.dump_resources_json(None),
            Some(format!("{{{l},{r}}}"))
        );
        assert_eq!(
            state.dump_resources_json(Some("r")),
            Some(format!("{{{r}}}"))
        );
        assert_eq!(state.dump_resources_json(Some("nope")), None);
        assert_eq!(
            State::new().dump_resources_json(None),
            Some("{}".to_owned())
        );
        assert_eq!(State::new().dump_sessions_json(), "{}");
    }

    #[test]
    fn claim_shapes() {
        let (_, claim) = small_state();
        let Outcome::Claim {
            claimed, ticket, ..
        } = claim
        else {
            panic!("{claim:?}")
        };
        assert_eq!(
            claim_json(claimed, ticket.as_ref()),
            format!(r#"{{"Claimed":true,"Ticket":{}}}"#, ticket_t())
        );
        assert_eq!(ticket_json(ticket.as_ref().unwrap()), ticket_t());
        let zero = r#"{"Claimed":false,"Ticket":{"Name":"","ResourceName":"","Data":null,"Issuer":null,"Claimant":null}}"#;
        assert_eq!(claim_json(false, None), zero);
        assert_eq!(claim_json(false, ticket.as_ref()), zero);
    }

    #[test]
    fn session_ids_are_strings_sorted_as_go_sorts_map_keys() {
        let mut state = State::new();
        state.apply(&Command::ReserveIds { count: 8 });
        for _ in 0..2 {
            state.apply(&Command::OpenSession {
                name: "n".into(),
                src: "s".into(),
                ttl_ms: 1,
            });
        }
        assert_eq!(session_id_json(9), r#""9""#);
        let dump = state.dump_sessions_json();
        assert!(dump.starts_with(r#"{"10":{"Name":"n","Id":"10""#), "{dump}");
        assert!(dump.contains(r#"},"9":{"Name":"n","Id":"9""#), "{dump}");
    }

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        assert_eq!(string_json("Ok"), r#""Ok""#);
        assert_eq!(string_json(""), r#""""#);
        let nasty = "a\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}<>&\u{2028}\u{2029}é😀\u{7f}/";
        let expected = "\"a\\\"\\\\\\n\\r\\t\\b\\f\\u0001\\u001f\\u003c\\u003e\\u0026\\u2028\\u2029é😀\u{7f}/\"";
        assert_eq!(string_json(nasty), expected);
    }

    #[test]
    fn names_from_urls_are_escaped_everywhere() {
        let mut state = State::new();
        let name = "q\"<\n";
        state.apply(&Command::OpenSession {
            name: name.into(),
            src: "s".into(),
            ttl_ms: 1,
        });
        let issue = Command::IssueTicket {
            session: 1,
            resource: name.into(),
            name: name.into(),
            data: vec![0xff],
        };
        state.apply(&issue);
        let escaped = r#""q\"\u003c\n""#;
        let dump = state.dump_resources_json(None).unwrap();
        assert_eq!(dump.matches(escaped).count(), 6, "{dump}");
        assert!(dump.contains(r#""Data":"/w==""#));
        assert!(!state.session_json(1).unwrap().contains('\n'));
    }
}
