"""Request sessions: one session of each kind per request (the request scope and its
middleware), the admission of requests that may use a sync session, and closing a session
after the response without blocking the event loop or the threadpool.
"""
