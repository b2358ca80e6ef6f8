"""An example service on `backend`: what the README's "Your own app" describes, whole."""
