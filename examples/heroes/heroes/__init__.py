"""An example service on `backend`: what docs/sessions.md's "Your own app" describes, whole."""
