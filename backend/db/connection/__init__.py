"""Where and how to connect: the settings' URL turned into each driver's arguments (libpq's
rules for psycopg2, asyncpg's URL and host list), the resolved target (hosts, ports, sockets),
the TLS rule and its SSL context, and Neon's rules checked against them at startup. Pure
functions of the settings: nothing here opens a connection or builds an engine.
"""
