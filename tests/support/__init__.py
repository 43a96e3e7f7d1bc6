"""What the tests and the benchmarks share: a clock, a fake channel, servers, database helpers.

- `clock`: `ManualClock`, which moves only when a test says so, and `T0`, where it starts.
- `channels`: `RecordingChannel`, a fake that satisfies the outbox's `Channel` protocol.
- `servers`: real SMTP and webhook servers on 127.0.0.1 that record what they receive.
- `db`: services on a test's database, and the users and tasks a host application writes.
"""
