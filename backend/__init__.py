"""The database layer for FastAPI + SQLModel services on Neon serverless Postgres."""
