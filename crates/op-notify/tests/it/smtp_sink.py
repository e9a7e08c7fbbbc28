"""A real SMTP server for op-notify's tests (aiosmtpd, Debian's python3-aiosmtpd).

Usage: smtp_sink.py PORT DIR [CERT KEY USER PASSWORD]

Every message received is written to DIR/N.eml, with DIR/N.json beside it: the envelope's
recipients, whether the session was under TLS and the user who authenticated. With CERT and KEY
the server offers STARTTLS and requires it, and requires AUTH as USER with PASSWORD. Prints
"ready" once it accepts connections, then serves until killed.
"""

import json
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Sink:
    def __init__(self, out):
        self.out = out
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        base = os.path.join(self.out, str(n))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "login": session.auth_data if session.authenticated else None,
        }
        with open(base + ".json", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 Message accepted for delivery"


def main():
    port = int(sys.argv[1])
    out = sys.argv[2]
    kwargs = {}
    if len(sys.argv) > 3:
        cert, key, user, password = sys.argv[3:7]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            # handled=False: aiosmtpd answers 535 itself (its default leaves the client waiting).
            return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

        kwargs = dict(
            tls_context=context,
            require_starttls=True,
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=True,
        )
    controller = Controller(Sink(out), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()


main()
