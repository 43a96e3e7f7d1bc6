"""Real servers on 127.0.0.1 that record what they receive and answer as a test scripts.

- `smtp.RecordingSmtpServer`: an aiosmtpd server (optionally with STARTTLS, implicit TLS, AUTH).
- `webhook.RecordingWebhookServer`: a threading HTTP/1.1 server with keep-alive.
- `silent.SilentServer`: a socket that accepts connections and never says a word (timeouts).
- `tls.self_signed_tls`: a certificate for 127.0.0.1 and the matching server/client contexts.

Each server is a context manager; leaving it stops the server and closes every connection, so
no socket outlives a test (pytest turns ResourceWarnings into errors here). The benchmarks'
receivers are built on the same servers.
"""
