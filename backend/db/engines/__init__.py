"""What each engine does: the SQLAlchemy engines built from the settings (`build`), and what is
installed on them: connect retries, the idle ping, the pool that serves the longest waiter and
times its waits, TCP keepalives and the client-side waits, the psycopg2 statement deadline, a
read engine's guards (a READ ONLY transaction per read, the statement check), the health of a
pool and a connection, and the classification and labelling of database errors.
"""
