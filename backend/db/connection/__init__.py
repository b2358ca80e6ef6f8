"""Where and how to connect, as one value: `plan_connection(settings)` (plan.py) builds the
`ConnectionPlan` once per settings, and the engines, the startup check, the CLI and the doctor
read it. Its I/O, once, is machine.py's (the login name, the TLS files, the client key); the
rules it applies are pure functions: the resolved target (target.py: hosts, addresses, ports),
the TLS rule (tls.py) and each driver's URL and arguments, Neon's pooler among them (url.py).
Nothing here opens a connection or builds an engine.
"""
