//! The mail channel, the seed's `service.on('http:500', () => send_mail())`:
//! one message per event through an SMTP relay (lettre), plain, implicit TLS
//! (`smtps://`) or STARTTLS (`?tls=starttls`), with optional credentials.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Event, Origin, rfc3339};

const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The mail settings (`SITIO_NOTIFY_SMTP*`, `SITIO_NOTIFY_MAIL_*`), flattened
/// into [`crate::Config`].
#[derive(Debug, Clone, Args)]
pub struct MailSettings {
    /// SMTP relay told of the same events as the webhook: `smtp://HOST:PORT`
    /// (plain), `smtp://HOST:PORT?tls=starttls` (STARTTLS required) or
    /// `smtps://HOST:PORT` (TLS from the start).
    #[arg(long, global = true, env = "SITIO_NOTIFY_SMTP", value_name = "SITIO_NOTIFY_SMTP",
          value_parser = parse_relay)]
    pub notify_smtp: Option<Relay>,

    /// Recipients of crash mail, comma-separated (required with SITIO_NOTIFY_SMTP).
    #[arg(long, global = true, env = "SITIO_NOTIFY_MAIL_TO", value_name = "SITIO_NOTIFY_MAIL_TO",
          value_parser = parse_mailboxes)]
    pub notify_mail_to: Option<Mailboxes>,

    /// Sender of crash mail.
    #[arg(long, global = true, env = "SITIO_NOTIFY_MAIL_FROM", value_name = "SITIO_NOTIFY_MAIL_FROM",
          default_value = "sitio <sitio@localhost>", value_parser = parse_mailbox)]
    pub notify_mail_from: Mailbox,

    /// SMTP user name (with SITIO_NOTIFY_SMTP_PASSWORD or _PASSWORD_FILE).
    #[arg(
        long,
        global = true,
        env = "SITIO_NOTIFY_SMTP_USER",
        value_name = "SITIO_NOTIFY_SMTP_USER"
    )]
    pub notify_smtp_user: Option<String>,

    /// SMTP password.
    #[arg(
        long,
        global = true,
        env = "SITIO_NOTIFY_SMTP_PASSWORD",
        value_name = "SITIO_NOTIFY_SMTP_PASSWORD",
        hide_env_values = true
    )]
    pub notify_smtp_password: Option<String>,

    /// File holding the SMTP password (a mounted Secret), read at startup.
    #[arg(long, global = true, env = "SITIO_NOTIFY_SMTP_PASSWORD_FILE",
          value_name = "SITIO_NOTIFY_SMTP_PASSWORD_FILE", value_parser = parse_password_file)]
    pub notify_smtp_password_file: Option<Password>,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            notify_smtp: None,
            notify_mail_to: None,
            notify_mail_from: Mailbox::new(
                Some("sitio".to_owned()),
                lettre::Address::new("sitio", "localhost").unwrap_or_else(|_| unreachable!()),
            ),
            notify_smtp_user: None,
            notify_smtp_password: None,
            notify_smtp_password_file: None,
        }
    }
}

impl MailSettings {
    /// Settings that only make sense together; the error names the variable.
    pub fn check(&self) -> Result<(), String> {
        if self.notify_smtp.is_some() && self.notify_mail_to.is_none() {
            return Err("SITIO_NOTIFY_MAIL_TO: expected one or more recipients \
                        (e.g. oncall@example.com) when SITIO_NOTIFY_SMTP is set"
                .to_owned());
        }
        if self.notify_smtp_user.is_some() != self.password().is_some() {
            return Err("SITIO_NOTIFY_SMTP_USER: expected together with \
                        SITIO_NOTIFY_SMTP_PASSWORD or SITIO_NOTIFY_SMTP_PASSWORD_FILE"
                .to_owned());
        }
        Ok(())
    }

    fn password(&self) -> Option<&str> {
        self.notify_smtp_password.as_deref().or(self
            .notify_smtp_password_file
            .as_ref()
            .map(|p| p.0.as_str()))
    }
}

/// How sitio talks to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain SMTP (a relay in the same pod or cluster).
    Plain,
    /// Plain first, then STARTTLS, required.
    StartTls,
    /// TLS from the first byte (`smtps://`, usually port 465).
    Wrapper,
}

/// `SITIO_NOTIFY_SMTP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Plain, STARTTLS or TLS.
    pub security: Security,
}

/// Recipients.
#[derive(Debug, Clone, PartialEq)]
pub struct Mailboxes(pub Vec<Mailbox>);

/// A password read from a file (never printed).
#[derive(Clone, PartialEq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

fn parse_relay(s: &str) -> Result<Relay, String> {
    let err = || {
        format!(
            "expected smtp://HOST:PORT, smtp://HOST:PORT?tls=starttls or smtps://HOST:PORT, got {s:?}"
        )
    };
    let uri: http::Uri = s.trim().parse().map_err(|_| err())?;
    let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(err)?;
    let security = match (uri.scheme_str(), uri.query()) {
        (Some("smtps"), None) => Security::Wrapper,
        (Some("smtp"), None) => Security::Plain,
        (Some("smtp"), Some("tls=starttls")) => Security::StartTls,
        _ => return Err(err()),
    };
    let default_port = if security == Security::Wrapper {
        465
    } else {
        25
    };
    Ok(Relay {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: uri.port_u16().unwrap_or(default_port),
        security,
    })
}

fn parse_mailbox(s: &str) -> Result<Mailbox, String> {
    s.trim()
        .parse()
        .map_err(|e| format!("expected a mail address such as sitio@example.com: {e}"))
}

fn parse_mailboxes(s: &str) -> Result<Mailboxes, String> {
    let list = s
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(parse_mailbox)
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err("expected one or more mail addresses, comma-separated".to_owned());
    }
    Ok(Mailboxes(list))
}

fn parse_password_file(s: &str) -> Result<Password, String> {
    let path = PathBuf::from(s.trim());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("expected a readable file holding the password: {e}"))?;
    Ok(Password(text.trim_end_matches(['\r', '\n']).to_owned()))
}

/// The channel: a transport to the relay, and who gets the mail.
pub(super) struct Mail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Mail {
    /// The channel `settings` describe, `None` without `SITIO_NOTIFY_SMTP`.
    pub(super) fn new(
        settings: &MailSettings,
        ca_file: Option<&crate::tls::CaFile>,
    ) -> Result<Option<Mail>, String> {
        let (Some(relay), Some(to)) = (&settings.notify_smtp, &settings.notify_mail_to) else {
            return Ok(None);
        };
        let tls = match relay.security {
            Security::Plain => Tls::None,
            Security::StartTls => Tls::Required(tls_parameters(&relay.host, ca_file)?),
            Security::Wrapper => Tls::Wrapper(tls_parameters(&relay.host, ca_file)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&relay.host)
            .port(relay.port)
            .tls(tls)
            .timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(password)) = (&settings.notify_smtp_user, settings.password()) {
            builder = builder.credentials(Credentials::new(user.clone(), password.to_owned()));
        }
        Ok(Some(Mail {
            transport: builder.build(),
            from: settings.notify_mail_from.clone(),
            to: to.0.clone(),
        }))
    }

    /// One attempt to deliver.
    pub(super) async fn send(&self, origin: &Origin, e: &Event, folded: u64) -> Result<(), String> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject(origin, e))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(text(origin, e, folded))
            .map_err(|e| format!("the message could not be built: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("the SMTP relay refused or failed: {e}"))
    }
}

fn tls_parameters(
    host: &str,
    ca_file: Option<&crate::tls::CaFile>,
) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_owned());
    for der in ca_file.iter().flat_map(|f| f.certificates()) {
        let cert = Certificate::from_der(der.to_vec())
            .map_err(|e| format!("SITIO_CA_FILE: a certificate is not usable for mail: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("SITIO_NOTIFY_SMTP: TLS cannot be set up: {e}"))
}

fn subject(origin: &Origin, e: &Event) -> String {
    format!(
        "[sitio] {} ({}): {}",
        origin.host,
        origin.service,
        Origin::what(e)
    )
}

fn text(origin: &Origin, e: &Event, folded: u64) -> String {
    format!(
        "{summary}\n\n\
         event:    {event}\nkind:     {kind}\nhost:     {host}\nservice:  {service}\n\
         upstream: {upstream}\nrequest:  {method} {route}\nstatus:   {status}\n\
         latency:  {latency:.2} ms\n\
         time:     {time}\nfolded:   {folded} similar events since the last message\n",
        summary = origin.summary(e, folded),
        event = e.event,
        kind = e.kind,
        host = origin.host,
        service = origin.service,
        upstream = e.upstream,
        method = e.method,
        route = e.route,
        status = e
            .status
            .map_or_else(|| "none".to_owned(), |s| s.to_string()),
        latency = e.latency_ms,
        time = rfc3339(e.at),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_parse_with_their_security_and_nonsense_is_refused() {
        let r = parse_relay("smtp://mail.local:2525").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.security),
            ("mail.local", 2525, Security::Plain)
        );
        assert_eq!(parse_relay("smtps://mail.local").unwrap().port, 465);
        assert_eq!(
            parse_relay("smtp://m:587?tls=starttls").unwrap().security,
            Security::StartTls
        );
        for bad in [
            "mail.local:25",
            "http://m:25",
            "smtp://m:25?tls=maybe",
            "smtp://",
        ] {
            assert!(parse_relay(bad).is_err(), "{bad}");
        }
        assert!(parse_mailboxes("a@b.c, Ops <ops@b.c>").is_ok());
        assert!(parse_mailboxes("not an address").is_err());
    }
}
