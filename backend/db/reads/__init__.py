"""Reads and read replicas: read-only sessions and the guard that makes the server refuse
writes, the check that a statement is one read, the state of each replica (up, lag) with the
routing of reads by it, and /health/db's bounded probes of the replicas.
"""
