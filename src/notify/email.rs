//! E-mail over SMTP with lettre: plain (`tls = "none"`, for a local relay), STARTTLS (required
//! when chosen: a server that does not offer it is an error, not a silent downgrade) or TLS
//! from the first byte; optional AUTH with a user and a password (never over plain SMTP).
//!
//! The Message-ID is derived from the notice's idempotency key, so a retried message has the
//! same Message-ID and mail systems can drop the duplicate.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::notice::Notice;
use super::{BoxFuture, DeliveryError, Notifier, Receipt, error_chain, hostname};
use crate::notify::config::{EmailConfig, SmtpTls};

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    host: String,
}

impl Email {
    pub fn new(cfg: &EmailConfig, timeout: Duration) -> Result<Self, String> {
        crate::crypto::install_provider();
        let params = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(cfg.host.clone());
            if let Some(pem) = &cfg.ca_pem {
                b = b.add_root_certificate(Certificate::from_pem(pem).map_err(|e| format!("ca_file: {e}"))?);
            }
            b.build_rustls().map_err(|e| format!("TLS for {}: {e}", cfg.host))
        };
        let tls = match cfg.tls {
            SmtpTls::None => Tls::None,
            // Required, not opportunistic: no silent downgrade to plain text.
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host).tls(tls);
        let mut builder = builder.port(cfg.port).timeout(Some(timeout));
        if let (Some(user), Some(pass)) = (&cfg.user, &cfg.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        let from = cfg.from.parse().map_err(|e| format!("from: {e}"))?;
        let to = cfg.to.iter().map(|a| a.parse().map_err(|e| format!("to {a}: {e}"))).collect::<Result<_, String>>()?;
        Ok(Email { transport: builder.build(), from, to, host: hostname() })
    }

    pub fn message(&self, n: &Notice) -> Result<Message, String> {
        let id: String = n.key.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '.' }).collect();
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(format!("[understudy] {}", n.title()))
            .message_id(Some(format!("<{id}@{}>", self.host)));
        for t in &self.to {
            b = b.to(t.clone());
        }
        b.header(ContentType::TEXT_PLAIN).body(n.text_body()).map_err(|e| e.to_string())
    }
}

impl Notifier for Email {
    fn deliver<'a>(&'a self, n: &'a Notice) -> BoxFuture<'a, Result<Receipt, DeliveryError>> {
        Box::pin(async move {
            let msg = self.message(n).map_err(DeliveryError::Rejected)?;
            match self.transport.send(msg).await {
                Ok(resp) => {
                    let text: Vec<&str> = resp.message().collect();
                    Ok(Receipt { answer: format!("{} {}", resp.code(), text.join(" ")) })
                }
                Err(e) if e.is_permanent() => Err(DeliveryError::Rejected(error_chain(&e))),
                Err(e) => Err(DeliveryError::Retry(error_chain(&e))),
            }
        })
    }
}
