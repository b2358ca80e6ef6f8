"""What each engine does: the SQLAlchemy engines built from the settings (`build`), and what is
installed on them: connect retries, the idle ping, the pool that serves the longest waiter and
times its waits, TCP keepalives and the client-side waits, the psycopg2 statement deadline, the
health of a pool and a connection, and the classification and labelling of database errors.
"""
