"""Reads and read replicas: the state of each replica (up, lag), the routing of a read session
to a replica or the primary by it, and /health/db's bounded probes of the replicas. What keeps
a read from writing is the read engines' own (backend/db/engines/readonly.py).
"""
