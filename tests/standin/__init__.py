"""A local stand-in for Neon: TLS-only PostgreSQL, a proxy-like TLS front, a PgBouncer pooler."""
