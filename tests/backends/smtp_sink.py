#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for the crash-mail tests.

Usage: smtp_sink.py [--starttls CERT KEY] [--auth USER:PASSWORD]
Listens on 127.0.0.1, port chosen by the OS. Prints "PORT <n>" first, then
"MAIL <json>" for every message: {"from", "to", "subject", "body", "tls", "user"}.
With --starttls, mail is refused until the client has started TLS; with
--auth, until it has logged in with those credentials.
"""
import asyncio
import email
import email.policy
import json
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

args = sys.argv[1:]
tls_context = None
if "--starttls" in args:
    i = args.index("--starttls")
    tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_context.load_cert_chain(args[i + 1], args[i + 2])
credentials = None
if "--auth" in args:
    credentials = args[args.index("--auth") + 1].encode()


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and \
        auth_data.login + b":" + auth_data.password == credentials
    return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)


class Sink:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "body": message.get_content(),
            "tls": session.ssl is not None,
            "user": session.auth_data if session.authenticated else None,
        }
        sys.stdout.write("MAIL " + json.dumps(record) + "\n")
        sys.stdout.flush()
        return "250 OK"


def factory():
    return SMTP(
        Sink(),
        hostname="sink.test",
        tls_context=tls_context,
        require_starttls=tls_context is not None,
        authenticator=authenticator if credentials else None,
        auth_required=credentials is not None,
        # Credentials over a plain connection only when no TLS is offered (a test relay).
        auth_require_tls=tls_context is not None,
    )


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host="127.0.0.1", port=0)
    sys.stdout.write(f"PORT {server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    await server.serve_forever()


asyncio.run(main())
